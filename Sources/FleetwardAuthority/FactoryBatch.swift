public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import FleetwardKeyCustody
import SwiftASN1
import X509

/// Signs a factory line's batch of CSRs with the factory CA (profile `birth`) and records them
/// (DESIGN: provisioning flow 2).
///
/// Every CSR is read and checked before anything is signed or written; a batch with a bad file
/// changes nothing and names the files. Then, in this order: the devices are registered (state
/// `allowed`, proof = the birth key's fingerprint; already registered IDs are left as they are),
/// the certificates are recorded (one transaction, an audit entry each), and `OUT/<ID>.pem` is
/// written atomically for each. A run that dies after the registry write leaves recorded
/// certificates without files: running the batch again issues fresh ones.
public struct FactoryBatch: Sendable {
    public struct Summary: Codable, Sendable, Equatable {
        public var issued: Int
        public var registered: Int
        public var out: String
        public var seconds: Double
        public var certificatesPerSecond: Int
    }

    public let csrDirectory: String
    public let outDirectory: String
    public var model = "unknown"
    public var days: Int?

    public init(csrDirectory: String, outDirectory: String) {
        self.csrDirectory = csrDirectory
        self.outDirectory = outDirectory
    }

    /// The CSR files of the input directory: `*.csr`, `*.der`, `*.pem`, sorted by name.
    public func files() throws -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: csrDirectory) else {
            throw AuthorityError(.invalidConfiguration, "cannot read the CSR directory \(csrDirectory)")
        }
        return names.filter { [".csr", ".der", ".pem"].contains(where: $0.hasSuffix) }.sorted()
    }

    public func run(
        authority: CertificateAuthority, registrar: Registrar, by actor: Actor, now: Date = Date(),
        progress: (Int, Int) -> Void = { _, _ in }
    ) async throws -> Summary {
        let started = Date()
        let names = try files()
        guard !names.isEmpty else { throw AuthorityError(.invalidConfiguration, "\(csrDirectory) holds no .csr, .der or .pem files") }
        // Pass 1: read and check every CSR.
        var requests: [(name: String, id: DeviceID, request: CertificateRequest)] = []
        var problems: [String] = []
        var seen = Set<String>()
        for name in names {
            do {
                let request = try CertificateRequest(bytes: try AtomicFile.read(csrDirectory + "/" + name, limit: 64 * 1024))
                let id = try Self.deviceID(of: request, fileName: name)
                guard seen.insert(id.rawValue).inserted else { throw PKIError(.invalidRequest, "device \(id) appears twice in the batch") }
                try request.requireSubject(matching: .device(id))
                requests.append((name, id, request))
            } catch {
                problems.append("\(name): \(error)")
            }
        }
        guard problems.isEmpty else {
            let shown = problems.prefix(3).joined(separator: "; ")
            let more = problems.count > 3 ? "; and \(problems.count - 3) more" : ""
            throw AuthorityError(.invalidRequest, "\(problems.count) CSR file(s) refused (\(shown)\(more)); nothing was issued")
        }
        // Pass 2: sign in memory.
        var issued: [(id: DeviceID, certificate: IssuedCertificate, keySHA256: [UInt8])] = []
        issued.reserveCapacity(requests.count)
        for (index, item) in requests.enumerated() {
            let certificate = try authority.issue(item.request, profile: .birth, identity: .device(item.id), days: days, now: now)
            issued.append((item.id, certificate, item.request.subjectPublicKeySHA256))
            if index % 256 == 0 { progress(index, requests.count) }
        }
        // Registry: devices, then certificates.
        let devices = issued.map {
            Device(id: $0.id, model: model, metadata: [:], proof: .publicKey(sha256: $0.keySHA256), createdAt: now)
        }
        let registered = try await registrar.importBatch(
            devices, source: "factory:" + URL(fileURLWithPath: csrDirectory).lastPathComponent, lines: 1...max(1, devices.count), by: actor,
            at: now)
        try await registrar.recordCertificates(
            issued.map {
                CertificateRecord(
                    serial: $0.certificate.serialNumber.hexString, deviceID: $0.id, profile: CertificateProfile.birth.rawValue, owner: nil,
                    notBefore: $0.certificate.notValidBefore, notAfter: $0.certificate.notValidAfter,
                    sha256: $0.certificate.sha256Fingerprint, issuedAt: now)
            }, by: actor, at: now)
        // Files.
        try FileManager.default.createDirectory(atPath: outDirectory, withIntermediateDirectories: true)
        for item in issued {
            try AtomicFile.write(Array(item.certificate.pem.utf8), to: outDirectory + "/" + item.id.rawValue + ".pem", permissions: 0o644)
        }
        progress(requests.count, requests.count)
        let seconds = Date().timeIntervalSince(started)
        return Summary(
            issued: issued.count, registered: registered.inserted, out: outDirectory, seconds: (seconds * 1000).rounded() / 1000,
            certificatesPerSecond: seconds > 0 ? Int(Double(issued.count) / seconds) : issued.count)
    }

    /// The device a factory CSR is for: its subject serialNumber, else commonName, else the file name.
    static func deviceID(of request: CertificateRequest, fileName: String) throws -> DeviceID {
        let stem = (fileName as NSString).deletingPathExtension
        return try DeviceID(DeviceID.named(by: request.requestedSubject) ?? stem)
    }
}
