import CPKCS11
public import Crypto
public import Foundation
import Synchronization

/// What went wrong with a token, in one line (never the PIN).
public struct PKCS11Error: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case invalidURI, moduleUnusable, tokenMissing, wrongPIN, pinLocked, keyMissing, tokenFailed
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// The module's return value `rv` from `operation`, named.
    init(_ rv: CK_RV, _ operation: String, token: String) {
        switch rv {
        case CK_RV(CKR_PIN_INCORRECT): self.init(.wrongPIN, "the PIN for token '\(token)' is wrong")
        case CK_RV(CKR_PIN_LOCKED): self.init(.pinLocked, "token '\(token)' is locked after too many wrong PINs")
        case CK_RV(CKR_TOKEN_NOT_PRESENT), CK_RV(CKR_DEVICE_REMOVED), CK_RV(CKR_SLOT_ID_INVALID):
            self.init(.tokenMissing, "token '\(token)' is not present")
        default: self.init(.tokenFailed, "token '\(token)': \(operation) failed (\(Self.name(rv)))")
        }
    }

    static func name(_ rv: CK_RV) -> String {
        let names: [CK_RV: String] = [
            CK_RV(CKR_GENERAL_ERROR): "CKR_GENERAL_ERROR", CK_RV(CKR_FUNCTION_FAILED): "CKR_FUNCTION_FAILED",
            CK_RV(CKR_DEVICE_ERROR): "CKR_DEVICE_ERROR", CK_RV(CKR_DEVICE_MEMORY): "CKR_DEVICE_MEMORY",
            CK_RV(CKR_SESSION_HANDLE_INVALID): "CKR_SESSION_HANDLE_INVALID", CK_RV(CKR_USER_NOT_LOGGED_IN): "CKR_USER_NOT_LOGGED_IN",
            CK_RV(CKR_KEY_HANDLE_INVALID): "CKR_KEY_HANDLE_INVALID", CK_RV(CKR_MECHANISM_INVALID): "CKR_MECHANISM_INVALID",
            CK_RV(CKR_TEMPLATE_INCONSISTENT): "CKR_TEMPLATE_INCONSISTENT", CK_RV(CKR_ATTRIBUTE_SENSITIVE): "CKR_ATTRIBUTE_SENSITIVE",
            CK_RV(CKR_TOKEN_WRITE_PROTECTED): "CKR_TOKEN_WRITE_PROTECTED", CK_RV(CKR_FUNCTION_NOT_SUPPORTED): "CKR_FUNCTION_NOT_SUPPORTED",
        ]
        return names[rv] ?? "CK_RV 0x" + String(rv, radix: 16)
    }
}

/// One token in a PKCS#11 module (SoftHSM2, an HSM, tpm2-pkcs11, a secure element's module),
/// logged in as the user. Keys are made inside it and never leave it: it signs digests with
/// CKM_ECDSA, derives ECDH secrets with CKM_ECDH1_DERIVE and hands back the public half.
/// Concurrent calls run on a pool of sessions (``SessionPool``), one call per session at a time.
public final class PKCS11Token: Sendable {
    public let uri: PKCS11URI
    /// The module's function table: read-only once loaded, and the module was initialised for
    /// calls from any thread (CKF_OS_LOCKING_OK).
    nonisolated(unsafe) private let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>
    private let session: SessionPool

    /// The module `uri.modulePath` (or `modulePath`), the token labelled `uri.token`, a session
    /// logged in with `pin`.
    ///
    /// - Throws: ``PKCS11Error``: `.moduleUnusable`, `.tokenMissing`, `.wrongPIN`, `.pinLocked`.
    public init(uri: PKCS11URI, modulePath: String? = nil, pin: String) throws {
        guard let path = uri.modulePath ?? modulePath else {
            throw PKCS11Error(.moduleUnusable, "no PKCS#11 module: give --pkcs11-module PATH or module-path= in the URI")
        }
        let list = try Self.module(path)
        functions = list
        self.uri = uri
        var slot = CK_SLOT_ID(0)
        var rv = fw_p11_find_token(list, uri.token, &slot)
        guard rv == CK_RV(CKR_OK) else {
            throw rv == CK_RV(CKR_TOKEN_NOT_PRESENT)
                ? PKCS11Error(.tokenMissing, "no token labelled '\(uri.token)' in \(path)") : PKCS11Error(rv, "C_GetSlotList", token: uri.token)
        }
        var opened = CK_SESSION_HANDLE(0)
        let pinBytes = Array(pin.utf8)
        rv = pinBytes.withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { fw_p11_open_session(list, slot, $0.baseAddress, $0.count, &opened) }
        }
        guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_Login", token: uri.token) }
        // More sessions are opened as concurrent calls need them: the login holds for all of the
        // application's sessions with the token (PKCS#11 §5.6).
        let token = uri.token
        session = SessionPool(first: opened, limit: Self.sessionLimit) {
            var more = CK_SESSION_HANDLE(0)
            let rv = fw_p11_open_session(list, slot, nil, 0, &more)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_OpenSession", token: token) }
            return more
        }
    }

    /// Sessions per token: two per core (a signature in the token blocks its thread), at most 16.
    static var sessionLimit: Int { min(16, max(2, 2 * ProcessInfo.processInfo.activeProcessorCount)) }

    deinit {
        for handle in session.drain() { _ = fw_p11_close_session(functions, handle) }
    }

    /// A loaded module's function table; `@unchecked`: it is read-only once loaded.
    struct Module: @unchecked Sendable {
        let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>
    }

    /// Modules by path: each is loaded and initialised once per process (two C_Initialize calls
    /// racing each other leave some modules half-initialised), and never finalised.
    static let modules = Mutex<[String: Module]>([:])

    static func module(_ path: String) throws -> UnsafeMutablePointer<CK_FUNCTION_LIST> {
        try modules.withLock { modules in
            if let loaded = modules[path] { return loaded.functions }
            var handle: UnsafeMutableRawPointer?
            var list: UnsafeMutablePointer<CK_FUNCTION_LIST>?
            var error = [CChar](repeating: 0, count: 512)
            let loaded = fw_p11_load(path, &handle, &list, &error, error.count)
            guard loaded == CK_RV(CKR_OK), let list else {
                let text = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                throw PKCS11Error(.moduleUnusable, "cannot use the PKCS#11 module \(path): \(text.isEmpty ? PKCS11Error.name(loaded) : text)")
            }
            modules[path] = Module(functions: list)
            return list
        }
    }

    /// A new P-256 key pair inside the token, labelled `label`: the private half sensitive and
    /// never extractable. Refuses a label already in use.
    public func generateP256Key(label: String, allowDerive: Bool = false) throws -> PKCS11Key {
        if try privateKeyHandle(label) != nil { throw PKCS11Error(.tokenFailed, "token '\(uri.token)' already holds a key labelled '\(label)'") }
        let id = Array(SHA256.hash(data: Array(label.utf8)).prefix(16))
        return try session.withSession { session in
            var publicHandle = CK_OBJECT_HANDLE(0)
            var privateHandle = CK_OBJECT_HANDLE(0)
            let rv = fw_p11_generate_p256(functions, session, label, id, id.count, allowDerive ? 1 : 0, &publicHandle, &privateHandle)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_GenerateKeyPair", token: uri.token) }
            return PKCS11Key(
                token: self, label: label, handle: privateHandle, publicKey: try publicKey(of: publicHandle, session: session))
        }
    }

    /// The key labelled `label`, nil when the token holds none.
    public func key(label: String) throws -> PKCS11Key? {
        guard let privateHandle = try privateKeyHandle(label) else { return nil }
        return try session.withSession { session in
            var publicHandle = CK_OBJECT_HANDLE(0)
            var found: Int32 = 0
            let rv = fw_p11_find_object(functions, session, CK_OBJECT_CLASS(CKO_PUBLIC_KEY), label, &publicHandle, &found)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_FindObjects", token: uri.token) }
            guard found != 0 else {
                throw PKCS11Error(.keyMissing, "token '\(uri.token)' holds the private key '\(label)' but not its public key")
            }
            return PKCS11Key(token: self, label: label, handle: privateHandle, publicKey: try publicKey(of: publicHandle, session: session))
        }
    }

    /// Whether the private key's CKA_EXTRACTABLE and CKA_SENSITIVE say it cannot leave.
    public func isNonExtractable(_ key: PKCS11Key) throws -> Bool {
        try session.withSession { session in
            var extractable: Int32 = 1
            var sensitive: Int32 = 0
            var rv = fw_p11_bool_attribute(functions, session, key.handle, CK_ATTRIBUTE_TYPE(CKA_EXTRACTABLE), &extractable)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_GetAttributeValue", token: uri.token) }
            rv = fw_p11_bool_attribute(functions, session, key.handle, CK_ATTRIBUTE_TYPE(CKA_SENSITIVE), &sensitive)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_GetAttributeValue", token: uri.token) }
            return extractable == 0 && sensitive != 0
        }
    }

    func sign(digest: [UInt8], with key: CK_OBJECT_HANDLE) throws -> [UInt8] {
        try session.withSession { session in
            var signature = [UInt8](repeating: 0, count: 132)
            var length = UInt(signature.count)
            let rv = fw_p11_sign_ecdsa(functions, session, key, digest, digest.count, &signature, &length)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_Sign", token: uri.token) }
            return Array(signature.prefix(Int(length)))
        }
    }

    /// ECDH in the token (CKM_ECDH1_DERIVE, no KDF): the shared x-coordinate with `peer`. The key
    /// must have been made with `allowDerive`.
    func sharedSecret(with peer: P256.KeyAgreement.PublicKey, key: CK_OBJECT_HANDLE) throws -> [UInt8] {
        let point = Array(peer.x963Representation)
        return try session.withSession { session in
            var secret = [UInt8](repeating: 0, count: 64)
            var length = UInt(secret.count)
            let rv = fw_p11_ecdh(functions, session, key, point, point.count, &secret, &length)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_DeriveKey (ECDH)", token: uri.token) }
            guard length == 32 else { throw PKCS11Error(.tokenFailed, "token '\(uri.token)' derived \(length) bytes, not P-256's 32") }
            return Array(secret.prefix(32))
        }
    }

    /// Renames the key pair labelled `label` (both halves) to `newLabel`.
    public func relabel(_ key: PKCS11Key, to newLabel: String) throws -> PKCS11Key {
        try session.withSession { session in
            var publicHandle = CK_OBJECT_HANDLE(0)
            var found: Int32 = 0
            var rv = fw_p11_find_object(functions, session, CK_OBJECT_CLASS(CKO_PUBLIC_KEY), key.label, &publicHandle, &found)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_FindObjects", token: uri.token) }
            if found != 0 {
                rv = fw_p11_set_label(functions, session, publicHandle, newLabel)
                guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_SetAttributeValue", token: uri.token) }
            }
            rv = fw_p11_set_label(functions, session, key.handle, newLabel)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_SetAttributeValue", token: uri.token) }
        }
        return PKCS11Key(token: self, label: newLabel, handle: key.handle, publicKey: key.publicKey)
    }

    /// Destroys the key pair labelled `label` (both halves); nothing when there is none.
    public func destroyKey(label: String) throws {
        try session.withSession { session in
            for objectClass in [CKO_PRIVATE_KEY, CKO_PUBLIC_KEY] {
                while true {
                    var handle = CK_OBJECT_HANDLE(0)
                    var found: Int32 = 0
                    var rv = fw_p11_find_object(functions, session, CK_OBJECT_CLASS(objectClass), label, &handle, &found)
                    guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_FindObjects", token: uri.token) }
                    guard found != 0 else { break }
                    rv = fw_p11_destroy(functions, session, handle)
                    guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_DestroyObject", token: uri.token) }
                }
            }
        }
    }

    /// The labels of the private keys the token holds (up to 4,096).
    public func privateKeyLabels() throws -> [String] {
        try session.withSession { session in
            var handles = [CK_OBJECT_HANDLE](repeating: 0, count: 4096)
            var count: UInt = 0
            var rv = fw_p11_find_all(functions, session, CK_OBJECT_CLASS(CKO_PRIVATE_KEY), &handles, UInt(handles.count), &count)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_FindObjects", token: uri.token) }
            var labels: [String] = []
            for handle in handles.prefix(Int(count)) {
                var label = [UInt8](repeating: 0, count: 256)
                var length = UInt(label.count)
                rv = fw_p11_attribute(functions, session, handle, CK_ATTRIBUTE_TYPE(CKA_LABEL), &label, &length)
                if rv == CK_RV(CKR_OK), length <= 256 { labels.append(String(decoding: label.prefix(Int(length)), as: UTF8.self)) }
            }
            return labels
        }
    }

    private func privateKeyHandle(_ label: String) throws -> CK_OBJECT_HANDLE? {
        try session.withSession { session in
            var handle = CK_OBJECT_HANDLE(0)
            var found: Int32 = 0
            let rv = fw_p11_find_object(functions, session, CK_OBJECT_CLASS(CKO_PRIVATE_KEY), label, &handle, &found)
            guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "C_FindObjects", token: uri.token) }
            return found != 0 ? handle : nil
        }
    }

    /// CKA_EC_POINT is the uncompressed point wrapped in a DER OCTET STRING (PKCS#11 §2.3.3);
    /// some modules give the bare point.
    private func publicKey(of handle: CK_OBJECT_HANDLE, session: CK_SESSION_HANDLE) throws -> P256.Signing.PublicKey {
        var length: UInt = 0
        var rv = fw_p11_attribute(functions, session, handle, CK_ATTRIBUTE_TYPE(CKA_EC_POINT), nil, &length)
        guard rv == CK_RV(CKR_OK), length > 0, length < 1024 else { throw PKCS11Error(rv, "reading CKA_EC_POINT", token: uri.token) }
        var point = [UInt8](repeating: 0, count: Int(length))
        rv = fw_p11_attribute(functions, session, handle, CK_ATTRIBUTE_TYPE(CKA_EC_POINT), &point, &length)
        guard rv == CK_RV(CKR_OK) else { throw PKCS11Error(rv, "reading CKA_EC_POINT", token: uri.token) }
        var bytes = Array(point.prefix(Int(length)))
        if bytes.count == 67, bytes[0] == 0x04, bytes[1] == 65 { bytes = Array(bytes.dropFirst(2)) }
        do {
            return try P256.Signing.PublicKey(x963Representation: bytes)
        } catch {
            throw PKCS11Error(.tokenFailed, "token '\(uri.token)' gave a public key that is not a P-256 point")
        }
    }
}

/// A P-256 private key inside a token: it signs there; only its public half is known here.
public struct PKCS11Key: Sendable {
    public let token: PKCS11Token
    public let label: String
    let handle: CK_OBJECT_HANDLE
    public let publicKey: P256.Signing.PublicKey

    /// ECDSA P-256 with SHA-256 over `data`: the digest is made here, the signature in the token
    /// (raw r || s), returned as swift-crypto's signature (`.derRepresentation` for X.509).
    public func signature(for data: some DataProtocol) throws -> P256.Signing.ECDSASignature {
        let digest = Array(SHA256.hash(data: data))
        let raw = try token.sign(digest: digest, with: handle)
        do {
            return try P256.Signing.ECDSASignature(rawRepresentation: raw)
        } catch {
            throw PKCS11Error(.tokenFailed, "token '\(token.uri.token)' returned a \(raw.count)-byte signature, not P-256's r || s")
        }
    }

    /// ECDH with `peer` in the token (the key must allow derivation): the shared x-coordinate.
    public func sharedSecret(with peer: P256.KeyAgreement.PublicKey) throws -> [UInt8] {
        try token.sharedSecret(with: peer, key: handle)
    }
}

/// A token's sessions: calls take an idle one, or open another up to `limit`, or wait for one to
/// come back; each session serves one call at a time (PKCS#11 sessions are not for concurrent use).
final class SessionPool: @unchecked Sendable {
    private let condition = NSCondition()
    private var idle: [CK_SESSION_HANDLE]
    private var count = 1
    private let limit: Int
    private let open: () throws -> CK_SESSION_HANDLE

    init(first: CK_SESSION_HANDLE, limit: Int, open: @escaping () throws -> CK_SESSION_HANDLE) {
        idle = [first]
        self.limit = max(1, limit)
        self.open = open
    }

    func withSession<T>(_ body: (CK_SESSION_HANDLE) throws -> T) throws -> T {
        let session = try take()
        defer {
            condition.lock()
            idle.append(session)
            condition.signal()
            condition.unlock()
        }
        return try body(session)
    }

    private func take() throws -> CK_SESSION_HANDLE {
        condition.lock()
        if let session = idle.popLast() {
            condition.unlock()
            return session
        }
        if count < limit {
            count += 1
            condition.unlock()
            do {
                return try open()
            } catch {
                // The token allows no more sessions (or failed): wait for one of those it has.
                condition.lock()
                count -= 1
                guard count > 0 else {
                    condition.unlock()
                    throw error
                }
            }
        }
        while idle.isEmpty { condition.wait() }
        let session = idle.removeLast()
        condition.unlock()
        return session
    }

    /// Every idle session, for closing (the pool is being released).
    func drain() -> [CK_SESSION_HANDLE] {
        condition.lock()
        defer { condition.unlock() }
        let all = idle
        idle = []
        return all
    }
}
