// fleetward-bench: measures issuance throughput on one thread.
//
//   fleetward-bench issuance [--seconds S] [--csrs N] [--ca-key P-256|P-384] [--pkcs11 URI]
//
// With --pkcs11 the issuing key is the token's `bench/issuing` (made there if missing; module-path in the
// URI, PIN from FLEETWARD_PKCS11_PIN) and every certificate is signed there.
//
// Pre-makes N P-256 CSRs (untimed), then for S seconds runs the whole issuance path on each in
// turn: parse the DER CSR, verify its signature, check key type, build the full `device` profile
// certificate, sign it, encode it. Prints one JSON line.
import Crypto
import FleetwardKeyCustody
import FleetwardPKCS11
import FleetwardPKI
import Foundation
import X509

struct Options {
    var breakdown = false
    var seconds = 3.0
    var csrCount = 2000
    var caKeyType = KeyType.p256
    var pkcs11: String?
}

func parseOptions() -> Options {
    var options = Options()
    var arguments = CommandLine.arguments.dropFirst()
    guard arguments.first == "issuance" else {
        FileHandle.standardError.write(
            Data("usage: fleetward-bench issuance [--seconds S] [--csrs N] [--ca-key P-256|P-384] [--breakdown]\n".utf8))
        exit(2)
    }
    arguments = arguments.dropFirst()
    while let flag = arguments.popFirst() {
        let value = arguments.popFirst() ?? ""
        switch flag {
        case "--seconds": options.seconds = Double(value) ?? options.seconds
        case "--csrs": options.csrCount = Int(value) ?? options.csrCount
        case "--ca-key": options.caKeyType = KeyType(parsing: value) ?? options.caKeyType
        case "--pkcs11": options.pkcs11 = value
        case "--breakdown":
            options.breakdown = true
            if !value.isEmpty { arguments.insert(value, at: arguments.startIndex) }
        default:
            FileHandle.standardError.write(Data("fleetward-bench: unknown option \(flag)\n".utf8))
            exit(2)
        }
    }
    return options
}

let options = parseOptions()
var rng = SystemRandomNumberGenerator()
let now = Date()

let rootKey = SigningKey(generating: .p384)
let root = try CACertificateFactory.makeRoot(key: rootKey, organization: "Bench", days: 3650, now: now, using: &rng)
let issuingKey: SigningKey
if let text = options.pkcs11 {
    let token = try PKCS11Token(uri: try PKCS11URI(parsing: text), pin: ProcessInfo.processInfo.environment["FLEETWARD_PKCS11_PIN"] ?? "")
    let label = "bench/issuing"
    issuingKey = TokenKeyCustodian.signingKey(try token.key(label: label) ?? token.generateP256Key(label: label))
} else {
    issuingKey = SigningKey(generating: options.caKeyType)
}
let issuingCertificate = try CACertificateFactory.makeIntermediate(
    role: .issuing, key: issuingKey, organization: "Bench", days: 1825, root: root, rootKey: rootKey, now: now, using: &rng
)
let issuer = try CertificateIssuer(caCertificate: issuingCertificate, key: issuingKey, role: .issuing, organization: "Bench")

var csrs: [(DeviceID, [UInt8])] = []
csrs.reserveCapacity(options.csrCount)
for index in 0..<options.csrCount {
    let id = try DeviceID(String(format: "BENCH-%08d", index))
    let key = P256.Signing.PrivateKey()
    let csr = try CertificateSigningRequest(
        version: .v1,
        subject: try DistinguishedName { CommonName(id.rawValue) },
        privateKey: Certificate.PrivateKey(key),
        attributes: CertificateSigningRequest.Attributes(),
        signatureAlgorithm: .ecdsaWithSHA256
    )
    var serializer = DERSerializerShim()
    csrs.append((id, try serializer.encode(csr)))
}

// Warm up, then measure.
var issued = 0
var bytes = 0
for (id, der) in csrs.prefix(200) {
    let request = try CertificateRequest(der: der)
    bytes &+= try issuer.issue(request, profile: .device, identity: .device(id), now: now, using: &rng).der.count
}
let clock = ContinuousClock()
let start = clock.now
let deadline = start + .milliseconds(Int(options.seconds * 1000))
var index = 0
while clock.now < deadline {
    for _ in 0..<100 {
        let (id, der) = csrs[index]
        index = (index + 1) % csrs.count
        let request = try CertificateRequest(der: der)
        try request.requireSubject(matching: .device(id))
        let certificate = try issuer.issue(request, profile: .device, identity: .device(id), now: now, using: &rng)
        bytes &+= certificate.der.count
        issued += 1
    }
}
let elapsed = clock.now - start

/// Microseconds per call of `body`, run over the CSRs for about `seconds`.
@MainActor func microseconds(_ seconds: Double, _ body: (Int) throws -> Void) rethrows -> Double {
    let started = clock.now
    let until = started + .milliseconds(Int(seconds * 1000))
    var calls = 0
    while clock.now < until {
        for _ in 0..<50 {
            try body(calls % csrs.count)
            calls += 1
        }
    }
    let spent = clock.now - started
    return (Double(spent.components.seconds) * 1e6 + Double(spent.components.attoseconds) / 1e12) / Double(calls)
}

if options.breakdown {
    let requests = try csrs.map { try CertificateRequest(der: $0.1) }
    let parsed = try csrs.map { try CertificateSigningRequest(derEncoded: $0.1) }
    let tbsLike = [UInt8](repeating: 0x5A, count: 400)
    let p256 = P256.Signing.PrivateKey()
    let signature = try p256.signature(for: tbsLike)
    let phase = options.seconds / 3
    let parseOnly = try microseconds(phase) { i in _ = try CertificateSigningRequest(derEncoded: csrs[i].1) }
    let verifyOnly = microseconds(phase) { i in _ = parsed[i].publicKey.isValidSignature(parsed[i].signature, for: parsed[i]) }
    let checkAll = try microseconds(phase) { i in _ = try CertificateRequest(der: csrs[i].1) }
    let issueOnly = try microseconds(phase) { i in
        _ = try issuer.issue(requests[i], profile: .device, identity: .device(csrs[i].0), now: now, using: &rng)
    }
    let rawSign = try microseconds(phase) { _ in _ = try p256.signature(for: tbsLike) }
    let rawVerify = microseconds(phase) { _ in _ = p256.publicKey.isValidSignature(signature, for: tbsLike) }
    // The issuing key's own signature (in the token with --pkcs11), SHA-256 included.
    let caKeySign = try microseconds(phase) { _ in _ = try issuingKey.signature(for: tbsLike) }
    func f(_ v: Double) -> String { String(format: "%.1f", v) }
    print(
        "{\"breakdown_us\":{\"csr_parse\":\(f(parseOnly)),\"csr_verify\":\(f(verifyOnly)),\"csr_check_total\":\(f(checkAll)),"
            + "\"issue_build_sign_encode\":\(f(issueOnly)),\"raw_p256_sign\":\(f(rawSign)),\"raw_p256_verify\":\(f(rawVerify)),"
            + "\"ca_key_sign\":\(f(caKeySign)),\"overhead_beyond_sign_and_verify\":\(f(checkAll + issueOnly - rawSign - rawVerify))}}"
    )
}
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let rate = Double(issued) / seconds
print(
    "{\"benchmark\":\"issuance\",\"profile\":\"device\",\"csr_key\":\"P-256\",\"ca_key\":\"\(options.caKeyType.rawValue)\","
        + "\"issued\":\(issued),\"seconds\":\(String(format: "%.3f", seconds)),\"per_second\":\(Int(rate)),"
        + "\"microseconds_each\":\(String(format: "%.1f", 1e6 / rate)),\"average_der_bytes\":\(bytes / max(issued + 200, 1))}"
)

import SwiftASN1

struct DERSerializerShim {
    mutating func encode(_ value: some DERSerializable) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(value)
        return serializer.serializedBytes
    }
}
