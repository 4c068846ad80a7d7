import Crypto
import FleetwardDevice
import FleetwardPKCS11
import FleetwardPKI
import FleetwardTestSupport
import Foundation
import Synchronization
import Testing

/// Keys inside a real PKCS#11 module: Debian's SoftHSM2, its tokens under a private directory,
/// checked with OpenSC's pkcs11-tool (a tool nobody here wrote) as well as through our own calls.
@Suite struct PKCS11TokenTests {
    /// SoftHSM2 reads its configuration once per process, at C_Initialize: every test shares one
    /// token directory, made once, with a token per test made before the module is first loaded.
    final class SoftHSM: Sendable {
        static let module = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
            .first { FileManager.default.fileExists(atPath: $0) }
        static let pin = "fleet-pin-2468"
        static let labels = ["fw-sign", "fw-reopen", "fw-wrong-pin", "fw-device", "fw-pool"]
        static let shared: Result<SoftHSM, any Error> = Result { try SoftHSM() }

        let directory: String
        let configuration: String
        let modulePath: String
        let labelSuffix: String

        private init() throws {
            guard let module = Self.module else {
                throw Tool.Missing(description: "SoftHSM2 is not installed (scripts/test.sh installs softhsm2)")
            }
            modulePath = module
            if let given = ProcessInfo.processInfo.environment["SOFTHSM2_CONF"], FileManager.default.fileExists(atPath: given) {
                // scripts/test.sh made one before the process started (no setenv among threads).
                configuration = given
                directory = (given as NSString).deletingLastPathComponent
            } else {
                directory = NSTemporaryDirectory() + "fleetward-softhsm-\(getpid())"
                try FileManager.default.createDirectory(atPath: directory + "/tokens", withIntermediateDirectories: true)
                configuration = directory + "/softhsm2.conf"
                try "directories.tokendir = \(directory)/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
                    .write(toFile: configuration, atomically: true, encoding: .utf8)
                setenv("SOFTHSM2_CONF", configuration, 1)
            }
            // Labels unique to this process: a token directory may outlive a run.
            labelSuffix = "-\(getpid())"
            let util = try Tool("softhsm2-util")
            for label in Self.labels {
                let made = try util.run(
                    ["--init-token", "--free", "--label", label + labelSuffix, "--pin", Self.pin, "--so-pin", "fleet-so-1357"],
                    environment: ["SOFTHSM2_CONF": configuration])
                guard made.succeeded else { throw Tool.Missing(description: "softhsm2-util --init-token failed: \(made)") }
            }
        }

        func uri(_ label: String) -> PKCS11URI { PKCS11URI(token: self.label(label), modulePath: modulePath) }
        func label(_ label: String) -> String { label + labelSuffix }
    }

    static func softHSM() throws -> SoftHSM { try SoftHSM.shared.get() }

    @Test func aKeyMadeInTheTokenSignsThereAndNeverLeavesIt() throws {
        let hsm = try Self.softHSM()
        let token = try PKCS11Token(uri: hsm.uri("fw-sign"), pin: SoftHSM.pin)
        let key = try token.generateP256Key(label: "issuing")
        let message = Array("a TBSCertificate, say".utf8)
        let signature = try key.signature(for: message)
        #expect(key.publicKey.isValidSignature(signature, for: message))
        #expect(!key.publicKey.isValidSignature(signature, for: Array("another message".utf8)))
        #expect(try token.isNonExtractable(key))
        // The same label twice is refused (a second key would shadow the first).
        #expect(throws: PKCS11Error.self) { try token.generateP256Key(label: "issuing") }

        // OpenSC's pkcs11-tool sees the pair, the private half sensitive and never extractable,
        // and signs with it: its signature verifies under the public key we read.
        let tool = try Tool("pkcs11-tool")
        let environment = ["SOFTHSM2_CONF": hsm.configuration]
        let listed = try tool.run(
            ["--module", hsm.modulePath, "--token-label", hsm.label("fw-sign"), "--login", "--pin", SoftHSM.pin, "--list-objects"],
            environment: environment)
        #expect(listed.succeeded, "\(listed)")
        let privateSection = listed.stdout.components(separatedBy: "Private Key Object").dropFirst().first ?? ""
        #expect(privateSection.contains("label:      issuing"), "\(listed.stdout)")
        #expect(privateSection.contains("never extractable"), "\(listed.stdout)")
        #expect(privateSection.contains("sensitive"), "\(listed.stdout)")
        let directory = try TemporaryDirectory(prefix: "fleetward-p11")
        defer { directory.remove() }
        // SoftHSM2 offers CKM_ECDSA (over a digest), as Fleetward uses it: the digest by openssl.
        try directory.write("message", "signed by pkcs11-tool")
        let digest = try Tool.openssl().run(["dgst", "-sha256", "-binary", "-out", directory.file("digest"), directory.file("message")])
        #expect(digest.succeeded, "\(digest)")
        let signed = try tool.run(
            [
                "--module", hsm.modulePath, "--token-label", hsm.label("fw-sign"), "--login", "--pin", SoftHSM.pin, "--sign", "--mechanism", "ECDSA",
                "--label", "issuing", "--input-file", directory.file("digest"), "--output-file", directory.file("signature"),
            ], environment: environment)
        #expect(signed.succeeded, "\(signed)")
        let raw = try Data(contentsOf: URL(fileURLWithPath: directory.file("signature")))
        let theirs = try P256.Signing.ECDSASignature(rawRepresentation: raw)
        #expect(key.publicKey.isValidSignature(theirs, for: Array("signed by pkcs11-tool".utf8)))
    }

    @Test func aKeyIsFoundAgainByItsLabelInANewSession() throws {
        let hsm = try Self.softHSM()
        let made = try PKCS11Token(uri: hsm.uri("fw-reopen"), pin: SoftHSM.pin).generateP256Key(label: "release-signing")
        let again = try PKCS11Token(uri: hsm.uri("fw-reopen"), pin: SoftHSM.pin)
        let found = try #require(try again.key(label: "release-signing"))
        #expect(found.publicKey.rawRepresentation == made.publicKey.rawRepresentation)
        let signature = try found.signature(for: Array("manifest".utf8))
        #expect(made.publicKey.isValidSignature(signature, for: Array("manifest".utf8)))
        #expect(try again.key(label: "no-such-key") == nil)
    }

    @Test func aWrongPINAMissingTokenOrModuleIsOneClearError() throws {
        let hsm = try Self.softHSM()
        let wrong = #expect(throws: PKCS11Error.self) { try PKCS11Token(uri: hsm.uri("fw-wrong-pin"), pin: "not-the-pin") }
        #expect(wrong?.code == .wrongPIN, "\(String(describing: wrong))")
        #expect(wrong.map { !$0.message.contains("not-the-pin") } == true, "the PIN must never be in a message")
        let missing = #expect(throws: PKCS11Error.self) { try PKCS11Token(uri: hsm.uri("fw-nowhere"), pin: SoftHSM.pin) }
        #expect(missing?.code == .tokenMissing && missing?.message.contains("fw-nowhere") == true, "\(String(describing: missing))")
        let module = #expect(throws: PKCS11Error.self) {
            try PKCS11Token(uri: PKCS11URI(token: "fw-sign", modulePath: "/nonexistent/libpkcs11.so"), pin: SoftHSM.pin)
        }
        #expect(module?.code == .moduleUnusable && module?.message.contains("/nonexistent/libpkcs11.so") == true)
        let notAModule = #expect(throws: PKCS11Error.self) {
            try PKCS11Token(uri: PKCS11URI(token: "fw-sign", modulePath: "/lib/x86_64-linux-gnu/libc.so.6"), pin: SoftHSM.pin)
        }
        #expect(notAModule?.message.contains("not a PKCS#11 module") == true, "\(String(describing: notAModule))")
    }

    /// The device side: a secure element's keys through the same module. The key signs and does
    /// ECDH in the token (for encrypted images: an HPKE wrap by swift-crypto opens through it).
    @Test func aDeviceKeyInTheTokenSignsAgreesAndIsFoundAndDestroyedByReference() throws {
        let hsm = try Self.softHSM()
        let custody = TokenKeyCustody(token: try PKCS11Token(uri: hsm.uri("fw-device"), pin: SoftHSM.pin))
        let key = try custody.generateKey(purpose: .operational)
        let message = Array("a CSR's CertificationRequestInfo".utf8)
        #expect(key.publicKey.isValidSignature(try key.signature(for: message), for: message))
        #expect(try custody.references() == [key.reference])
        let reopened = try TokenKeyCustody(token: try PKCS11Token(uri: hsm.uri("fw-device"), pin: SoftHSM.pin)).key(reference: key.reference)
        #expect(reopened.publicKey.x963Representation == key.publicKey.x963Representation)

        // ECDH in the token gives what the peer computes in software.
        let peer = P256.KeyAgreement.PrivateKey()
        let devicePublic = try P256.KeyAgreement.PublicKey(x963Representation: key.publicKey.x963Representation)
        let expected = try peer.sharedSecretFromKeyAgreement(with: devicePublic).withUnsafeBytes { Array($0) }
        #expect(try key.sharedSecret(with: peer.publicKey) == expected)
        let contentKey = SymmetricKey(size: .bits256)
        let info = ImageEncryption.wrapInfo(artifact: String(repeating: "0f", count: 32), device: "se-1")
        let wrapped = try ImageEncryption.wrap(contentKey, to: devicePublic, info: info)
        #expect(try ImageEncryption.unwrap(wrapped, recipient: devicePublic, info: info) { try reopened.sharedSecret(with: $0) } == contentKey)

        // OpenSC lists it: never extractable, under its reference.
        let listed = try Tool("pkcs11-tool").run(
            ["--module", hsm.modulePath, "--token-label", hsm.label("fw-device"), "--login", "--pin", SoftHSM.pin, "--list-objects"],
            environment: ["SOFTHSM2_CONF": hsm.configuration])
        let privateSection = listed.stdout.components(separatedBy: "Private Key Object").dropFirst().first ?? ""
        #expect(privateSection.contains("fleetward/device/" + key.reference) && privateSection.contains("never extractable"), "\(listed)")

        try custody.destroyKey(reference: key.reference)
        #expect(try custody.references().isEmpty)
        #expect(throws: DeviceError.self) { try custody.key(reference: key.reference) }
    }

    /// Many threads signing at once share the token's sessions (more are opened as needed, one
    /// call per session at a time): every signature verifies.
    @Test func concurrentSignaturesShareAPoolOfSessions() throws {
        let hsm = try Self.softHSM()
        let token = try PKCS11Token(uri: hsm.uri("fw-pool"), pin: SoftHSM.pin)
        let key = try token.generateP256Key(label: "pooled", allowDerive: true)
        let peer = P256.KeyAgreement.PrivateKey()
        let devicePublic = try P256.KeyAgreement.PublicKey(x963Representation: key.publicKey.x963Representation)
        let expected = try peer.sharedSecretFromKeyAgreement(with: devicePublic).withUnsafeBytes { Array($0) }
        let failures = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 64) { index in
            let message = Array("message \(index)".utf8)
            let good =
                (try? key.signature(for: message)).map { key.publicKey.isValidSignature($0, for: message) } == true
                && (try? key.sharedSecret(with: peer.publicKey)) == expected
            if !good { failures.withLock { $0 += 1 } }
        }
        #expect(failures.withLock { $0 } == 0)
    }

    @Test func uris() throws {
        let uri = try PKCS11URI(parsing: "pkcs11:token=fleet%20ca;object=issuing?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/fleet/pin")
        #expect(uri == PKCS11URI(token: "fleet ca", object: "issuing", modulePath: "/usr/lib/softhsm/libsofthsm2.so", pinSource: "/etc/fleet/pin"))
        #expect(try PKCS11URI(parsing: uri.description) == uri)
        for bad in ["token=x", "pkcs11:object=x", "pkcs11:token=x;token=y", "pkcs11:token=x?pin-value=1234", "pkcs11:token=%zz", "pkcs11:token=x;bogus=1"] {
            let error = #expect(throws: PKCS11Error.self, "\(bad)") { try PKCS11URI(parsing: bad) }
            #expect(error?.code == .invalidURI)
        }
        let pinValue = #expect(throws: PKCS11Error.self) { try PKCS11URI(parsing: "pkcs11:token=x?pin-value=secret-1234") }
        #expect(pinValue.map { !$0.message.contains("secret-1234") } == true)
    }
}
