import Crypto
public import FleetwardPKI
public import Foundation
public import X509
public import SwiftASN1

/// A small CA hierarchy built in memory with a fixed clock and a seeded random source, for tests.
public struct TestPKI: Sendable {
    /// 2026-01-01T00:00:00Z: every test that issues pins its time here or relative to it.
    public static let now = Date(timeIntervalSince1970: 1_767_225_600)

    public let rootKey: SigningKey
    public let root: Certificate
    public let issuingKey: SigningKey
    public let issuing: Certificate
    public let factoryKey: SigningKey
    public let factory: Certificate

    public init(
        rootType: KeyType = .p384, intermediateType: KeyType = .p256, rootDays: Int = 7305, intermediateDays: Int = 1826, seed: UInt64 = 1
    ) throws {
        var rng = SeededRandom(seed: seed)
        rootKey = SigningKey(generating: rootType)
        root = try CACertificateFactory.makeRoot(key: rootKey, organization: "Test Fleet", days: rootDays, now: Self.now, using: &rng)
        issuingKey = SigningKey(generating: intermediateType)
        issuing = try CACertificateFactory.makeIntermediate(
            role: .issuing, key: issuingKey, organization: "Test Fleet", days: intermediateDays,
            root: root, rootKey: rootKey, now: Self.now, using: &rng
        )
        factoryKey = SigningKey(generating: intermediateType)
        factory = try CACertificateFactory.makeIntermediate(
            role: .factory, key: factoryKey, organization: "Test Fleet", days: intermediateDays,
            root: root, rootKey: rootKey, now: Self.now, using: &rng
        )
    }

    public func issuer(_ role: CARole = .issuing) throws -> CertificateIssuer {
        switch role {
        case .issuing: try CertificateIssuer(caCertificate: issuing, key: issuingKey, role: .issuing, organization: "Test Fleet")
        case .factory: try CertificateIssuer(caCertificate: factory, key: factoryKey, role: .factory, organization: "Test Fleet")
        case .root: try CertificateIssuer(caCertificate: root, key: rootKey, role: .root, organization: "Test Fleet")
        }
    }

    /// A DER CSR signed by `key` with `subject`.
    public static func csr(
        key: Certificate.PrivateKey,
        subject: DistinguishedName = DistinguishedName(),
        signatureAlgorithm: Certificate.SignatureAlgorithm? = nil
    ) throws -> [UInt8] {
        let algorithm = signatureAlgorithm ?? key.defaultSignatureAlgorithm
        let request = try CertificateSigningRequest(
            version: .v1, subject: subject, privateKey: key,
            attributes: CertificateSigningRequest.Attributes(), signatureAlgorithm: algorithm
        )
        return try derBytes(request)
    }

    public static func derBytes(_ value: some DERSerializable) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(value)
        return serializer.serializedBytes
    }
}

extension Certificate.PrivateKey {
    var defaultSignatureAlgorithm: Certificate.SignatureAlgorithm {
        switch publicKey.description {
        case "P384.PublicKey": .ecdsaWithSHA384
        case "P521.PublicKey": .ecdsaWithSHA512
        case "Ed25519.PublicKey": .ed25519
        case let other where other.hasPrefix("RSA"): .sha256WithRSAEncryption
        default: .ecdsaWithSHA256
        }
    }
}

/// A deterministic random source (SplitMix64) for reproducible serials and salts in tests.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
