import FleetwardRegistry
import Foundation

// Request and response bodies of the management API. Requests list their fields so unknown
// ones are refused (see ``JSONBody``).

struct DeviceRequest: JSONBody {
    static let fields: Set<String> = ["id", "model", "secret", "keySHA256", "metadata"]
    var id: String
    var model: String
    var secret: String?
    var keySHA256: String?
    var metadata: [String: String]?
}

struct RevokeCertificateRequest: JSONBody {
    static let fields: Set<String> = ["reason"]
    var reason: String?
}

struct TransferRequest: JSONBody {
    static let fields: Set<String> = ["to"]
    var to: String
}

struct ClaimRequest: JSONBody {
    static let fields: Set<String> = ["device", "claimCode"]
    var device: String
    var claimCode: String
}

struct EnrollmentTokenRequest: JSONBody {
    static let fields: Set<String> = ["ttlSeconds"]
    var ttlSeconds: Int?
}

struct OwnerRequest: JSONBody {
    static let fields: Set<String> = ["id", "name"]
    var id: String
    var name: String?
}

struct GroupRequest: JSONBody {
    static let fields: Set<String> = ["name", "caCertificate", "autoApprove"]
    var name: String
    var caCertificate: String
    var autoApprove: Bool?
}

struct TokenRequest: JSONBody {
    static let fields: Set<String> = ["role", "owner"]
    var role: String
    var owner: String?
}

struct DevicePage: Encodable {
    var devices: [Device.PublicView]
    var next: String?

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(devices, forKey: .devices)
        try container.encode(next, forKey: .next)
    }
    enum CodingKeys: String, CodingKey { case devices, next }
}

struct OwnerPage: Encodable {
    var owners: [Owner]
    var next: String?

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(owners, forKey: .owners)
        try container.encode(next, forKey: .next)
    }
    enum CodingKeys: String, CodingKey { case owners, next }
}

struct ClaimCodeResponse: Encodable {
    var device: String
    var claimCode: String
}

struct EnrollmentTokenResponse: Encodable {
    var device: String
    var token: String
    var expiresAt: Date
}

struct GroupView: Encodable {
    var id: String
    var name: String
    var caSHA256: String
    var autoApprove: Bool
    var createdAt: Date

    init(_ group: EnrollmentGroup) {
        id = group.id
        name = group.name
        caSHA256 = group.caSHA256
        autoApprove = group.autoApprove
        createdAt = group.createdAt
    }
}

struct GroupList: Encodable {
    var groups: [GroupView]
}

struct TokenView: Encodable {
    var id: String
    var role: String
    var owner: String?
    var createdAt: Date
    var expiresAt: Date?
    /// Only in the answer to `POST /tokens`: shown once.
    var token: String?

    init(_ record: APITokenRecord) {
        id = record.id
        role = record.role.rawValue
        owner = record.owner
        createdAt = record.createdAt
        expiresAt = record.expiresAt
    }
}

struct TokenList: Encodable {
    var tokens: [TokenView]
}

struct AuditView: Encodable {
    var sequence: Int64
    var time: Date
    var actor: String
    var action: String
    var subject: String
    var before: String?
    var after: String?
    var hash: String

    init(_ entry: AuditEntry) {
        sequence = entry.sequence
        time = Date(timeIntervalSince1970: Double(entry.timeMilliseconds) / 1000)
        actor = entry.actor
        action = entry.action
        subject = entry.subject
        before = entry.before
        after = entry.after
        hash = entry.hash.map { String(format: "%02x", $0) }.joined()
    }
}

struct AuditPage: Encodable {
    var entries: [AuditView]
    var next: Int64?

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(entries, forKey: .entries)
        try container.encode(next, forKey: .next)
    }
    enum CodingKeys: String, CodingKey { case entries, next }
}

struct CertificateList: Encodable {
    var certificates: [CertificateRecord.PublicView]
}

struct TelemetryList: Encodable {
    var telemetry: [TelemetryRecord]
}
