import ArgumentParser
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardRegistry
import Foundation

/// `fleetward cert …`: issue and inspect certificates.
struct CertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cert",
        abstract: "Issue and inspect certificates.",
        subcommands: [Issue.self, Inspect.self, Revoke.self]
    )

    /// `fleetward cert issue`: sign a CSR under a profile.
    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a certificate from a PKCS#10 CSR (PEM or DER) under a profile.",
            discussion: """
                Profiles: device (needs --id; issuing CA, clientAuth, 30 days), birth (needs --id; factory CA, \
                enrollment only, 10 years capped at the CA's expiry), server (needs --host; issuing CA, serverAuth, \
                90 days), ocsp (issuing CA, or --ca factory; OCSPSigning, 30 days). Only the CSR's public key is \
                used: subject and extensions come from the profile, and a CSR whose subject names someone else \
                is refused.
                """
        )

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        @Option(help: ArgumentHelp("device, birth, server or ocsp.", valueName: "profile"))
        var profile: String

        @Option(help: ArgumentHelp("The CSR file (PEM or DER).", valueName: "file"))
        var csr: String

        @Option(help: ArgumentHelp("The device ID (profiles device and birth).", valueName: "id"))
        var id: String?

        @Option(name: .customLong("host"), help: ArgumentHelp("A DNS name or IP address (profile server; repeatable).", valueName: "name"))
        var hosts: [String] = []

        @Option(help: ArgumentHelp("The CA for an ocsp responder: issuing or factory.", valueName: "role"))
        var ca: String?

        @Option(help: "Lifetime in days (default: the profile's).")
        var days: Int?

        @Option(help: ArgumentHelp("Write the certificate here (PEM) instead of stdout.", valueName: "file"))
        var out: String?

        func run() async throws {
            guard let profile = CertificateProfile(rawValue: profile) else {
                throw ValidationError("unknown profile '\(self.profile)'; use device, birth, server or ocsp")
            }
            let identity = try makeIdentity(profile)
            var issuerRole: CARole?
            if let ca {
                guard let role = CARole(rawValue: ca), role != .root else {
                    throw ValidationError("--ca must be issuing or factory, not '\(ca)'")
                }
                issuerRole = role
            }
            let request = try CertificateRequest(bytes: try AtomicFile.read(csr, limit: 16 << 20))
            let directory = dataOptions.directory
            let hierarchy = try CAHierarchy.load(from: directory)
            let passphrase = try PassphraseSource.read(purpose: "for the CA keys", confirm: false)
            let authority = CertificateAuthority(
                hierarchy: hierarchy, custodian: try hierarchy.custodian(passphrase: passphrase)
            )
            let issued = try authority.issue(request, profile: profile, identity: identity, issuerRole: issuerRole, days: days)
            try await record(issued, of: request, passphrase: passphrase)
            if let out {
                try AtomicFile.write(Array(issued.pem.utf8), to: out, permissions: 0o644)
            }
            if output.json {
                try Output.printJSON(IssueReport(issued: issued, path: out))
            } else if out == nil {
                print(issued.pem, terminator: "")
            } else {
                Output.progress("Issued \(profile) certificate \(issued.serialNumber.hexString) to \(out!)")
            }
        }

        /// Records the certificate in the registry (and its audit log). A device or birth
        /// certificate is linked to its device, so revoking or reporting the device stolen revokes
        /// it too; a device not yet registered is registered with it (by the CSR key's
        /// fingerprint; active for a device certificate, allowed for a birth certificate).
        func record(_ issued: IssuedCertificate, of request: CertificateRequest, passphrase: Passphrase) async throws {
            let registrar = try await dataOptions.openRegistrar(passphrase: passphrase).registrar
            let now = Date()
            var deviceID: DeviceID?
            var register: [Device] = []
            var owner: String?
            if case .device(let id) = issued.identity {
                deviceID = id
                if let device = try await registrar.store.device(id) {
                    owner = device.owner
                } else {
                    register.append(
                        Device(
                            id: id, state: issued.profile == .device ? .active : .allowed, model: "console",
                            proof: .publicKey(sha256: request.subjectPublicKeySHA256), createdAt: now))
                }
            }
            try await registrar.recordCertificates(
                [
                    CertificateRecord(
                        serial: issued.serialNumber.hexString, deviceID: deviceID, profile: issued.profile.rawValue, owner: owner,
                        notBefore: issued.notValidBefore, notAfter: issued.notValidAfter, sha256: issued.sha256Fingerprint, issuedAt: now)
                ], registering: register, by: .console, at: now)
        }

        func makeIdentity(_ profile: CertificateProfile) throws -> CertificateIdentity {
            switch profile {
            case .device, .birth:
                guard let id else { throw ValidationError("profile \(profile) needs --id DEVICE-ID") }
                guard hosts.isEmpty else { throw ValidationError("--host applies to the server profile only") }
                return .device(try DeviceID(id))
            case .server:
                guard !hosts.isEmpty else { throw ValidationError("profile server needs at least one --host") }
                guard id == nil else { throw ValidationError("--id applies to the device and birth profiles only") }
                return .server(try hosts.map(ServerName.init))
            case .ocsp:
                guard id == nil, hosts.isEmpty else { throw ValidationError("profile ocsp takes neither --id nor --host") }
                return .ocspResponder
            case .codesign:
                throw ValidationError("the release signing certificate is made by 'fleetward release publish', not cert issue")
            }
        }
    }

    struct IssueReport: Encodable {
        var profile: String
        var serialNumber: String
        var notBefore: Date
        var notAfter: Date
        var sha256Fingerprint: String
        var path: String?
        var certificate: String

        init(issued: IssuedCertificate, path: String?) {
            profile = issued.profile.rawValue
            serialNumber = issued.serialNumber.hexString
            notBefore = issued.notValidBefore
            notAfter = issued.notValidAfter
            sha256Fingerprint = issued.sha256Fingerprint
            self.path = path
            certificate = issued.pem
        }
    }

    /// `fleetward cert inspect`: what a certificate says.
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what a certificate (PEM or DER; every certificate of a PEM chain) says."
        )

        @OptionGroup var output: OutputOptions

        @Argument(help: ArgumentHelp("The certificate file.", valueName: "file"))
        var file: String

        func run() throws {
            let certificates = try CertificateDecoder.certificates(from: try AtomicFile.read(file, limit: 16 << 20))
            let summaries = try certificates.map { try CertificateSummary(certificate: $0.certificate, der: $0.der) }
            if output.json {
                if summaries.count == 1 {
                    try Output.printJSON(summaries[0])
                } else {
                    try Output.printJSON(summaries)
                }
            } else {
                print(summaries.map(\.text).joined(separator: "\n\n"))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke one certificate (operational or birth) by serial; the device keeps its state.",
            discussion: "Reasons as RFC 5280 names them: keyCompromise (default), superseded, cessationOfOperation, …"
        )

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        @Option(help: ArgumentHelp("The serial number in hex, as 'openssl x509 -serial' prints it.", valueName: "hex"))
        var serial: String
        @Option(help: "The RFC 5280 reason.") var reason = "keyCompromise"

        func run() async throws {
            let serial = self.serial.lowercased().replacingOccurrences(of: ":", with: "")
            guard (2...42).contains(serial.count), serial.allSatisfy(\.isHexDigit) else {
                throw ValidationError("--serial must be 2 to 42 hex digits")
            }
            let reason = try RevocationReason(name: reason)
            let record = try await dataOptions.openRegistrar().registrar.revokeCertificate(
                serial: serial, reason: reason, by: .console, at: Date())
            if output.json {
                try Output.printJSON(record.publicView)
            } else {
                print("Revoked certificate \(record.serial) (\(reason)) of \(record.deviceID?.rawValue ?? "no registered device").")
            }
        }
    }
}
