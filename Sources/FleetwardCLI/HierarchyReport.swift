import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import Foundation

/// The CA hierarchy as `ca show`, `init` and `serve` print it.
struct HierarchyReport: Encodable {
    struct Entry: Encodable {
        var role: String
        var path: String
        var certificate: CertificateSummary
    }

    var dataDirectory: String
    var organization: String
    var certificates: [Entry]
    /// Where the issuing, factory and release-signing keys live: "files" or the token's URI.
    var keyStore: String

    init(hierarchy: CAHierarchy) throws {
        let directory = hierarchy.directory
        dataDirectory = directory.path
        organization = hierarchy.configuration.organization
        keyStore = hierarchy.configuration.keyStore ?? "files"
        certificates = try [CARole.root, .issuing, .factory].map { role in
            let member = hierarchy.member(role)
            return Entry(
                role: role.rawValue, path: directory.certificatePath(of: role),
                certificate: try CertificateSummary(certificate: member.certificate, der: member.der)
            )
        }
        let gatewayBytes = try AtomicFile.read(directory.gatewayCertificatePath)
        if let gateway = try CertificateDecoder.certificates(from: gatewayBytes).first {
            certificates.append(
                Entry(
                    role: "gateway", path: directory.gatewayCertificatePath,
                    certificate: try CertificateSummary(certificate: gateway.certificate, der: gateway.der)
                )
            )
        }
    }

    var text: String {
        var lines = ["Fleetward CA for \(organization) in \(dataDirectory)"]
        let width = certificates.map(\.role.count).max() ?? 0
        for entry in certificates {
            let c = entry.certificate
            let name = entry.role == "gateway" ? c.subjectAlternativeNames.joined(separator: " ") : c.subject
            lines.append(
                "  " + entry.role.padding(toLength: width, withPad: " ", startingAt: 0)
                    + "  \(c.publicKey)  until \(CertificateSummary.dateOnly(c.notAfter))  \(name)"
            )
            lines.append("  " + String(repeating: " ", count: width) + "  sha256 \(c.sha256Fingerprint)  \(entry.path)")
        }
        if keyStore != "files" {
            lines.append("  keys: issuing, factory and release signing in \(keyStore) (non-extractable); root and gateway in encrypted files")
        }
        return lines.joined(separator: "\n")
    }
}

extension CertificateSummary {
    static func dateOnly(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate]
        return formatter.string(from: date)
    }
}
