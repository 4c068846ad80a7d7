import FleetwardPKI
import FleetwardRegistry
import Foundation
import NIOCore
import PostgresNIO

/// Row reads and their decoding, shared by the store's reads (on the pool) and its transactions
/// (on the transaction's connection).
enum Rows {
    /// Runs one query: on the pool, or on a transaction's connection.
    typealias Query = (PostgresQuery) async throws -> PostgresRowSequence

    static let deviceColumns = "id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at, stolen_from, group_id, registered_by"
    typealias DeviceRow = (String, String, String?, String, String, String, ByteBuffer?, Int64, Int64, String?, String?, String?)
    static let tokenColumns = "id, secret_hmac, role, owner, created_at, expires_at"
    typealias TokenRow = (String, ByteBuffer, String, String?, Int64, Int64?)
    typealias CertificateRow = (String, String?, String, String?, Int64, Int64, String, Int64, Int32?, Int64?)
    typealias GroupRow = (String, String, ByteBuffer, String, Bool, Int64, String?)

    /// The device `id`; with `lock`, its row stays locked until the transaction ends.
    static func device(_ id: DeviceID, lock: Bool, _ query: Query) async throws -> Device? {
        let rows = try await query(
            "SELECT \(unescaped: deviceColumns) FROM devices WHERE id = \(id.rawValue)\(unescaped: lock ? " FOR UPDATE" : "")")
        for try await row in rows.decode(DeviceRow.self) { return try device(row) }
        return nil
    }

    static func device(_ row: DeviceRow) throws -> Device {
        guard let id = try? DeviceID(row.0), let state = DeviceState(rawValue: row.1) else {
            throw RegistryError(.storage, "a device row is malformed")
        }
        let bytes = row.6.map { Array($0.readableBytesView) } ?? []
        let proof: EnrollmentProof
        switch row.5 {
        case "secret": proof = .secret(hmac: bytes)
        case "public-key": proof = .publicKey(sha256: bytes)
        default: proof = .none
        }
        return Device(
            id: id, state: state, owner: row.2, model: row.3, metadata: RegistryEncoding.metadata(fromJSON: row.4), proof: proof,
            createdAt: RegistryEncoding.date(row.7), updatedAt: RegistryEncoding.date(row.8),
            stateBeforeTheft: row.9.flatMap(DeviceState.init(rawValue:)), group: row.10, registeredBy: row.11)
    }

    static func proofBytes(_ proof: EnrollmentProof) -> ByteBuffer? {
        switch proof {
        case .secret(let hmac): ByteBuffer(bytes: hmac)
        case .publicKey(let sha256): ByteBuffer(bytes: sha256)
        case .none: nil
        }
    }

    static func certificates(where condition: PostgresQuery, _ query: Query) async throws -> [CertificateRecord] {
        var sql = PostgresQuery(
            unsafeSQL: """
                SELECT c.serial, c.device_id, c.profile, c.owner, c.not_before, c.not_after, c.sha256, c.issued_at, r.reason, r.revoked_at
                FROM certificates c LEFT JOIN revocations r ON r.serial = c.serial WHERE 
                """)
        sql.sql += condition.sql
        sql.binds = condition.binds
        sql.sql += " ORDER BY c.issued_at DESC, c.serial"
        var records: [CertificateRecord] = []
        for try await row in try await query(sql).decode(CertificateRow.self) {
            records.append(
                CertificateRecord(
                    serial: row.0, deviceID: row.1.flatMap { try? DeviceID($0) }, profile: row.2, owner: row.3,
                    notBefore: RegistryEncoding.date(row.4), notAfter: RegistryEncoding.date(row.5), sha256: row.6,
                    issuedAt: RegistryEncoding.date(row.7),
                    revocation: row.8.map { CertificateRecord.Revocation(reason: Int($0), time: RegistryEncoding.date(row.9 ?? 0)) }))
        }
        return records
    }

    static func token(_ row: TokenRow) throws -> APITokenRecord {
        guard let role = Role(rawValue: row.2) else { throw RegistryError(.storage, "an api token row is malformed") }
        return APITokenRecord(
            id: row.0, secretHMAC: Array(row.1.readableBytesView), role: role, owner: row.3, createdAt: RegistryEncoding.date(row.4),
            expiresAt: row.5.map(RegistryEncoding.date))
    }

    static func owner(_ id: String, _ query: Query) async throws -> Owner? {
        for try await row in try await query("SELECT id, name, created_at FROM owners WHERE id = \(id)").decode((String, String?, Int64).self) {
            return try owner(row)
        }
        return nil
    }

    static func owner(_ row: (String, String?, Int64)) throws -> Owner {
        guard let owner = try? Owner(id: row.0, name: row.1, createdAt: RegistryEncoding.date(row.2)) else {
            throw RegistryError(.storage, "an owner row is malformed")
        }
        return owner
    }

    static func claimCode(for id: DeviceID, _ query: Query) async throws -> ClaimCodeRecord? {
        let rows = try await query(
            "SELECT salt, hash, iterations, claimed_by, claimed_at FROM claim_codes WHERE device_id = \(id.rawValue)")
        for try await (salt, hash, iterations, claimedBy, claimedAt) in rows.decode((ByteBuffer, ByteBuffer, Int32, String?, Int64?).self) {
            return ClaimCodeRecord(
                deviceID: id, salt: Array(salt.readableBytesView), hash: Array(hash.readableBytesView), iterations: Int(iterations),
                claimedBy: claimedBy, claimedAt: claimedAt.map(RegistryEncoding.date))
        }
        return nil
    }

    static func enrollmentToken(secretHMAC: [UInt8], _ query: Query) async throws -> EnrollmentTokenRecord? {
        let rows = try await query(
            "SELECT device_id, owner, expires_at, used_at FROM enrollment_tokens WHERE secret_hmac = \(ByteBuffer(bytes: secretHMAC))")
        for try await (device, owner, expires, used) in rows.decode((String, String?, Int64, Int64?).self) {
            guard let id = try? DeviceID(device) else { throw RegistryError(.storage, "an enrollment token row is malformed") }
            return EnrollmentTokenRecord(
                secretHMAC: secretHMAC, deviceID: id, owner: owner, expiresAt: RegistryEncoding.date(expires),
                usedAt: used.map(RegistryEncoding.date))
        }
        return nil
    }

    static func mqttPolicies(where condition: PostgresQuery, _ query: Query) async throws -> [MQTTPolicyRecord] {
        var sql = PostgresQuery(unsafeSQL: "SELECT scope, document, updated_at FROM mqtt_policies WHERE ")
        sql.sql += condition.sql
        sql.binds = condition.binds
        sql.sql += " ORDER BY scope"
        var records: [MQTTPolicyRecord] = []
        for try await row in try await query(sql).decode((String, String, Int64).self) {
            guard let scope = try? MQTTPolicyScope(parsing: row.0) else { throw RegistryError(.storage, "an MQTT policy row is malformed") }
            records.append(MQTTPolicyRecord(scope: scope, document: row.1, updatedAt: RegistryEncoding.date(row.2)))
        }
        return records
    }

    static func enrollmentGroups(where condition: PostgresQuery, _ query: Query) async throws -> [EnrollmentGroup] {
        var sql = PostgresQuery(
            unsafeSQL: "SELECT id, name, ca_certificate, ca_sha256, auto_approve, created_at, id_pattern FROM enrollment_groups WHERE ")
        sql.sql += condition.sql
        sql.binds = condition.binds
        sql.sql += " ORDER BY name"
        var groups: [EnrollmentGroup] = []
        for try await row in try await query(sql).decode(GroupRow.self) {
            groups.append(
                EnrollmentGroup(
                    id: row.0, name: row.1, caCertificateDER: Array(row.2.readableBytesView), caSHA256: row.3, autoApprove: row.4,
                    createdAt: RegistryEncoding.date(row.5), idPattern: row.6))
        }
        return groups
    }
}
