import FleetwardAuthority
import FleetwardMQTT
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

struct ClaimCodeRequest: JSONBody {
    static let fields: Set<String> = ["rotate"]
    /// Replace a code that exists and is unused (a reprinted label).
    var rotate: Bool?
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
    static let fields: Set<String> = ["name", "caCertificate", "autoApprove", "idPattern"]
    var name: String
    var caCertificate: String
    var autoApprove: Bool?
    var idPattern: String?
}

struct TokenRequest: JSONBody {
    static let fields: Set<String> = ["role", "owner", "ttlSeconds"]
    var role: String
    var owner: String?
    /// How long the token is valid (nil: until revoked).
    var ttlSeconds: Int?
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
    var idPattern: String?
    var createdAt: Date

    init(_ group: EnrollmentGroup) {
        id = group.id
        name = group.name
        caSHA256 = group.caSHA256
        autoApprove = group.autoApprove
        idPattern = group.idPattern
        createdAt = group.createdAt
    }
}

struct GroupList: Encodable {
    var groups: [GroupView]
}

struct MQTTPolicyView: Encodable {
    var scope: String
    var policy: TopicPolicy
    var updatedAt: Date

    init(_ record: MQTTPolicyRecord) throws {
        scope = record.scope.description
        policy = try MQTTPolicies.parse(Array(record.document.utf8))
        updatedAt = record.updatedAt
    }
}

struct MQTTPolicyList: Encodable {
    var policies: [MQTTPolicyView]
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

struct CertificateList: Encodable {
    var certificates: [CertificateRecord.PublicView]
}

/// One page of a list: `{"<items>": [...], "next": cursor or null}`; `next` is present (null on
/// the last page) so a client can tell the end without guessing.
struct Page<Item: Encodable, Cursor: Encodable>: Encodable {
    var name: String
    var items: [Item]
    var next: Cursor?

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(items, forKey: Key(name))
        try container.encode(next, forKey: Key("next"))
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ name: String) { stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

struct TelemetryList: Encodable {
    var telemetry: [TelemetryRecord]
}

