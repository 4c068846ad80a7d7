public import Crypto
public import Foundation
import FleetwardPKI
import SwiftASN1
public import X509

/// An EST client (RFC 7030) for a Fleetward device: `cacerts`, `simpleenroll` with a factory
/// secret, a one-time token, the registered key alone, or a client certificate (birth or
/// manufacturer certificate), and `simplereenroll` with the current operational certificate.
///
/// It trusts only the pinned root for the EST server, whatever the system trust store says.
public struct ESTClient: Sendable {
    /// How a device proves itself on `simpleenroll`.
    public enum Credential: Sendable {
        /// HTTP Basic with the device ID and its factory secret.
        case secret(id: String, secret: String)
        /// HTTP Basic with the device ID and a one-time enrollment token from its owner.
        case token(id: String, token: String)
        /// HTTP Basic with the device ID and an empty password: the CSR's key is the registered one.
        case registeredKey(id: String)
        /// A TLS client certificate (birth, manufacturer or current operational certificate), leaf
        /// first, with its key.
        case certificate(chain: [Certificate], key: any DeviceSigningKey)
    }

    /// What the server did with an enrollment.
    public enum Outcome: Sendable {
        /// A certificate was issued (DER and parsed).
        case issued(Certificate, der: [UInt8])
        /// The device waits for approval; ask again after `retryAfter` seconds (202).
        case pending(retryAfter: Int)
    }

    public static let prefix = "/.well-known/est"

    public var host: String
    public var port: Int
    public var pinned: PinnedTLS
    /// How long one exchange may take.
    public var timeout: Duration = .seconds(15)

    /// - Parameters:
    ///   - roots: the pinned Fleetward root(s).
    ///   - serverName: the name the EST server's certificate must carry (nil: the IP address).
    public init(host: String, port: Int, roots: [Certificate], serverName: String? = nil) {
        self.host = host
        self.port = port
        pinned = PinnedTLS(roots: roots, serverName: serverName)
    }

    /// The CA certificates the server publishes (`GET cacerts`): root and issuing CA.
    public func caCertificates() async throws -> [Certificate] {
        let response = try await HTTP1Client(host: host, port: port, tls: pinned, timeout: timeout).send(
            HTTP1Request(method: "GET", path: Self.prefix + "/cacerts"))
        guard response.status == 200 else { throw Self.refusal(response, "cacerts") }
        return try Self.certificates(response).map(\.certificate)
    }

    /// `simpleenroll`: a first certificate for the key in `csr` (DER PKCS#10).
    public func enroll(csr: [UInt8], with credential: Credential) async throws -> Outcome {
        try await post("simpleenroll", csr: csr, credential: credential)
    }

    /// `simplereenroll`: a fresh certificate, proving identity with the current one.
    public func reenroll(csr: [UInt8], current chain: [Certificate], key: any DeviceSigningKey) async throws -> Outcome {
        try await post("simplereenroll", csr: csr, credential: .certificate(chain: chain, key: key))
    }

    private func post(_ operation: String, csr: [UInt8], credential: Credential) async throws -> Outcome {
        var tls = pinned
        var headers: [(name: String, value: String)] = [
            ("Content-Type", "application/pkcs10"), ("Content-Transfer-Encoding", "base64"),
        ]
        switch credential {
        case .secret(let id, let password), .token(let id, let password):
            headers.append(("Authorization", "Basic " + Data("\(id):\(password)".utf8).base64EncodedString()))
        case .registeredKey(let id):
            headers.append(("Authorization", "Basic " + Data("\(id):".utf8).base64EncodedString()))
        case .certificate(let chain, let key):
            tls.clientChain = chain
            tls.clientKey = key
        }
        let body = Array(Data(csr).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed]).utf8) + [0x0A]
        let response = try await HTTP1Client(host: host, port: port, tls: tls, timeout: timeout).send(
            HTTP1Request(method: "POST", path: Self.prefix + "/" + operation, headers: headers, body: body))
        switch response.status {
        case 200:
            guard let issued = try Self.certificates(response).first else {
                throw DeviceError(.malformedResponse, "\(operation) answered 200 without a certificate")
            }
            return .issued(issued.certificate, der: issued.der)
        case 202:
            return .pending(retryAfter: response.header("Retry-After").flatMap { Int($0) } ?? 60)
        default:
            throw Self.refusal(response, operation)
        }
    }

    static func certificates(_ response: HTTP1Response) throws -> [(certificate: Certificate, der: [UInt8])] {
        do {
            return try CertsOnlyPKCS7.decode(base64: response.text).map { (try Certificate(derEncoded: $0), $0) }
        } catch {
            throw DeviceError(.malformedResponse, "the server's PKCS#7 answer is unreadable: \(error)")
        }
    }

    static func refusal(_ response: HTTP1Response, _ operation: String) -> DeviceError {
        let reason = response.text.trimmingCharacters(in: .whitespacesAndNewlines).prefix(300)
        return DeviceError(
            .refused, "\(operation) refused (\(response.status))" + (reason.isEmpty ? "" : ": \(reason)"), status: response.status)
    }
}

/// PKCS#10 requests made on the device, signed inside the key's custody.
public enum DeviceCSR {
    /// A CSR for `key` naming `deviceID` as its commonName (or an empty subject when nil), signed
    /// with ECDSA-SHA256 by the custody: DER.
    public static func make(key: some DeviceSigningKey, deviceID: String?) throws -> [UInt8] {
        let subject = try deviceID.map { id in try DistinguishedName { CommonName(id) } } ?? DistinguishedName()
        let publicKey = Certificate.PublicKey(key.publicKey)
        // CertificationRequestInfo (RFC 2986 §4.1): version 0, subject, SPKI, no attributes.
        var info = DER.Serializer()
        try info.appendConstructedNode(identifier: .sequence) { body in
            try body.serialize(0)
            try body.serialize(subject)
            try body.serialize(publicKey)
            body.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { _ in }
        }
        let signature = try key.signature(for: info.serializedBytes)
        let request = try CertificateSigningRequest(
            version: .v1, subject: subject, publicKey: publicKey, attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .ecdsaWithSHA256,
            signature: try Certificate.Signature(
                signatureAlgorithm: .ecdsaWithSHA256, signatureBytes: ASN1BitString(bytes: Array(signature.derRepresentation)[...])))
        var serializer = DER.Serializer()
        try serializer.serialize(request)
        return serializer.serializedBytes
    }
}
