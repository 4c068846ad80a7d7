// libFuzzer targets for every parser that reads bytes from outside: certificates (PEM and DER),
// CSRs and their checks, EST bodies (base64 then PKCS#10), OCSP requests (and the answer built for
// them, read back), CRLs (read, and written then read back), allow-list CSV, release manifests
// and versions, the device's sealed-store format, the MQTT codec with the front door's session
// state machine, and encrypted images with their wrapped keys.
// One binary; FLEETWARD_FUZZ_TARGET picks the target. Built only by scripts/fuzz.sh
// (FLEETWARD_FUZZ=1 adds this target to the package; -sanitize=fuzzer,address). Every input must
// end in a value or a typed error: a crash, a trap or a leak is a finding.
import CFleetwardFuzzEntry
import Crypto
@testable import FleetwardDevice
import FleetwardMQTT
import FleetwardPKI
import FleetwardRegistry
import Foundation
import NIOCore
import X509

enum FuzzTarget: String, CaseIterable {
    case certificate, csr, estBody = "est-body", ocspRequest = "ocsp-request", crl, allowList = "allow-list", manifest, sealed, mqtt
    case image
}

let target = FuzzTarget(rawValue: ProcessInfo.processInfo.environment["FLEETWARD_FUZZ_TARGET"] ?? "") ?? {
    FileHandle.standardError.write(
        Data("set FLEETWARD_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
    exit(2)
}()

/// A fixed CA for the targets that issue or sign (made once).
let fixture: (issuer: CertificateIssuer, responder: OCSPResponder) = {
    let key = SigningKey(generating: .p256)
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    var rng = SystemRandomNumberGenerator()
    let ca = try! CACertificateFactory.makeRoot(key: key, organization: "Fuzz", days: 3650, now: now, using: &rng)
    let issuer = try! CertificateIssuer(caCertificate: ca, key: key, role: .issuing, organization: "Fuzz")
    let responderKey = SigningKey(generating: .p256)
    let responder = try! issuer.issue(publicKey: responderKey.publicKey, profile: .ocsp, identity: .ocspResponder, now: now, using: &rng)
    return (issuer, try! OCSPResponder(certificateDER: responder.der, key: responderKey))
}()

let sealingKey = DeviceUniqueKey.ephemeral()

/// The image target's fixed content key, device key and scratch directory.
let imageKey = SymmetricKey(size: .bits256)
let imageRecipient = P256.KeyAgreement.PrivateKey()
let imageDirectory: String = {
    let path = NSTemporaryDirectory() + "fleetward-fuzz-image-\(getpid())"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    switch target {
    case .certificate:
        if let certificates = try? CertificateDecoder.certificates(from: bytes) {
            for (certificate, der) in certificates { _ = try? CertificateSummary(certificate: certificate, der: der).text }
        }
    case .csr:
        if let request = try? CertificateRequest(bytes: bytes) {
            _ = try? request.requireSubject(matching: .device(try! DeviceID("FUZZ-1")))
            _ = request.subjectPublicKeySHA256
        }
    case .estBody:
        if let der = Base64.decode(bytes, skippingWhitespace: true) { _ = try? CertificateRequest(bytes: der) }
    case .ocspRequest:
        if let request = try? OCSP.parseRequest(bytes) {
            let now = Date(timeIntervalSince1970: 1_800_000_000)
            let singles = request.certIDs.map {
                OCSP.SingleResponse(certID: $0, status: .revoked(time: now, reason: 1), thisUpdate: now, nextUpdate: now + 3600)
            }
            let answer = try! fixture.responder.response(singles, nonceExtension: request.nonceExtension, producedAt: now)
            let read = try! OCSP.statuses(inResponse: answer)
            precondition(read.certificates.map(\.serialHex) == request.certIDs.map(\.serialHex), "OCSP answer does not read back")
        }
    case .crl:
        _ = try? CRLReader.revokedSerials(bytes)
        _ = try? CRLReader.nextUpdate(bytes)
        // Serials drawn from the input, written into a CRL and read back.
        let serials = stride(from: 0, to: min(bytes.count, 400), by: 8).map { offset -> String in
            let slice = bytes[offset..<min(bytes.count, offset + 8)]
            return ([0x01] + slice).map { String(format: "%02x", $0) }.joined()
        }
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let entries = serials.map { RevokedEntry(serialHex: $0, revocationDate: now, reasonCode: 1) }
        let crl = try! fixture.issuer.revocationList(entries: entries, number: 1, thisUpdate: now, nextUpdate: now + 86_400)
        let listed = try! CRLReader.revokedSerials(crl)
        precondition(Set(listed) == Set(serials), "a CRL written with these serials does not read back")
    case .allowList:
        var parser = AllowListParser()
        var index = 0
        while index < bytes.count {
            let end = min(bytes.count, index + 1 + Int(bytes[index] % 64))
            parser.feed(bytes[index..<end]) { _ in }
            index = end
        }
        parser.finish { _ in }
    case .manifest:
        if let manifest = try? ReleaseManifest.decode(bytes) {
            _ = try? manifest.encoded()
            _ = ReleaseVersion.isOlder(manifest.version, than: "1.0.0")
        }
        if let text = String(validating: bytes, as: UTF8.self) {
            let parts = text.split(separator: "\n", maxSplits: 1)
            if parts.count == 2 { _ = ReleaseVersion.isOlder(String(parts[0]), than: String(parts[1])) }
        }
    case .sealed:
        _ = try? sealingKey.open(bytes, kind: "credential", name: "credential", path: "fuzz")
    case .mqtt:
        // The input as a device's byte stream: frames (bounded before allocation) through a session.
        var buffer = ByteBuffer(bytes: bytes)
        var machine = MQTTSessionStateMachine(deviceID: "FUZZ-1")
        var first = true
        while let frame = try? MQTTFrameDecoder.frame(from: &buffer, maximumPacketSize: 4096) {
            for version in [MQTTVersion.v3_1_1, .v5] {
                _ = try? MQTTPublish(frame, version: version)
                _ = try? MQTTSubscribe(frame, version: version)
                _ = try? MQTTSubAck(frame, version: version)
                _ = try? MQTTConnAck(frame, version: version)
            }
            if let connect = try? MQTTConnect(frame) { precondition((try? MQTTConnect(connect.frame)) == connect, "CONNECT does not read back") }
            let actions = machine.receivedFromDevice(frame)
            if first, case .prepare? = actions.first {
                _ = machine.prepared(.standard, subject: TopicPolicy.Subject(id: "FUZZ-1", owner: nil, model: "m", group: nil))
                _ = machine.receivedFromBroker(MQTTConnAck(code: 0).frame(version: machine.version))
            }
            first = false
            _ = machine.receivedFromBroker(frame)
        }
    case .image:
        // The input as an encrypted image (64-byte chunks): it decrypts or is refused, never more.
        let path = imageDirectory + "/input"
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        if let handle = FileHandle(forReadingAtPath: path) {
            _ = try? ImageEncryption.decrypt(handle, ciphertextSize: Int64(bytes.count), key: imageKey, chunkSize: 64) { _ in }
            try? handle.close()
        }
        // As an image: it encrypts and reads back whole.
        if !bytes.isEmpty, let input = FileHandle(forReadingAtPath: path) {
            let sealed = imageDirectory + "/sealed"
            FileManager.default.createFile(atPath: sealed, contents: nil)
            let output = FileHandle(forWritingAtPath: sealed)!
            let result = try! ImageEncryption.encrypt(input, into: output, key: imageKey, chunkSize: 64)
            try? input.close()
            try? output.close()
            let reader = FileHandle(forReadingAtPath: sealed)!
            var back: [UInt8] = []
            _ = try! ImageEncryption.decrypt(reader, ciphertextSize: result.ciphertextSize, key: imageKey, chunkSize: 64) { back += $0 }
            try? reader.close()
            precondition(back == bytes, "an encrypted image does not decrypt to itself")
        }
        // As a wrapped key from the gateway: it opens or is refused.
        if let wrapped = try? JSONDecoder().decode(ImageEncryption.WrappedKey.self, from: Data(bytes)) {
            _ = try? ImageEncryption.unwrap(wrapped, recipient: imageRecipient.publicKey, info: Array("fuzz".utf8)) { peer in
                try imageRecipient.sharedSecretFromKeyAgreement(with: peer).withUnsafeBytes { Array($0) }
            }
        }
    }
    return 0
}
