package import Foundation

/// How the stores write devices and audit payloads, shared so SQLite and PostgreSQL rows and audit
/// entries are byte-for-byte the same.
package enum RegistryEncoding {
    /// A JSON object with sorted keys. Written by hand: a JSONEncoder per row costs more than the insert.
    package static func metadataJSON(_ metadata: [String: String]) -> String {
        guard !metadata.isEmpty else { return "{}" }
        var out = "{"
        for (index, key) in metadata.keys.sorted().enumerated() {
            if index > 0 { out += "," }
            out += "\"" + jsonEscape(key) + "\":\"" + jsonEscape(metadata[key]!) + "\""
        }
        return out + "}"
    }

    /// Reads what ``metadataJSON(_:)`` wrote.
    package static func metadata(fromJSON json: String) -> [String: String] {
        guard json != "{}" else { return [:] }
        return (try? JSONDecoder().decode([String: String].self, from: Data(json.utf8))) ?? [:]
    }

    /// What the audit log records of a device: no proof material.
    package static func auditJSON(_ device: Device) -> String {
        let owner = device.owner.map { "\"\(jsonEscape($0))\"" } ?? "null"
        return
            "{\"state\":\"\(device.state)\",\"owner\":\(owner),\"model\":\"\(jsonEscape(device.model))\",\"proof\":\"\(device.proof.kind)\"}"
    }

    /// The audit payload of one imported batch.
    package static func importJSON(lines: ClosedRange<Int>, _ result: ImportBatchResult) -> String {
        "{\"lines\":\"\(lines.lowerBound)-\(lines.upperBound)\",\"inserted\":\(result.inserted),\"duplicates\":\(result.duplicates)}"
    }

    /// The audit payload of a new token: its role and owner, never its secret.
    package static func tokenJSON(_ token: APITokenRecord) -> String {
        let owner = token.owner.map { ",\"owner\":\"\(jsonEscape($0))\"" } ?? ""
        return "{\"role\":\"\(token.role)\"\(owner)}"
    }

    /// The audit payload of an owner.
    package static func ownerJSON(_ owner: Owner) -> String {
        let name = owner.name.map { "\"\(jsonEscape($0))\"" } ?? "null"
        return "{\"id\":\"\(jsonEscape(owner.id))\",\"name\":\(name)}"
    }

    /// The audit payload of an enrollment group: its name, CA fingerprint and policy.
    package static func groupJSON(_ group: EnrollmentGroup) -> String {
        "{\"name\":\"\(jsonEscape(group.name))\",\"caSHA256\":\"\(group.caSHA256)\",\"autoApprove\":\(group.autoApprove)}"
    }

    /// The audit payload of a new enrollment token: its expiry and owner, never its secret.
    package static func enrollmentTokenJSON(_ token: EnrollmentTokenRecord) -> String {
        let owner = token.owner.map { "\"\(jsonEscape($0))\"" } ?? "null"
        return "{\"owner\":\(owner),\"expiresAt\":\(milliseconds(token.expiresAt))}"
    }

    /// The audit payload of an issued certificate.
    package static func certificateJSON(_ certificate: CertificateRecord) -> String {
        let device = certificate.deviceID.map { "\"\($0)\"" } ?? "null"
        return
            "{\"device\":\(device),\"profile\":\"\(jsonEscape(certificate.profile))\",\"notAfter\":\(milliseconds(certificate.notAfter)),\"sha256\":\"\(certificate.sha256)\"}"
    }

    package static func jsonEscape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    package static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded(.down)) }
    package static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }
}
