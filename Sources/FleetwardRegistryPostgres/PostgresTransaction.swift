import FleetwardPKI
import FleetwardRegistry
import Foundation
import Logging
import NIOCore
import PostgresNIO

/// The row operations of one PostgreSQL transaction. Devices read here are locked (`FOR
/// UPDATE`); an audited transaction already holds the audit lock, which orders every audited
/// writer across nodes.
struct PostgresTransaction: RegistryTransaction {
    let connection: PostgresConnection
    let logger: Logger
    let audited: Bool

    @discardableResult
    private func query(_ query: PostgresQuery) async throws -> PostgresRowSequence {
        try await connection.query(query, logger: logger)
    }

    /// Runs `query` and says whether it returned a row (for `… RETURNING 1`).
    private func returnsRow(_ sql: PostgresQuery) async throws -> Bool {
        var found = false
        for try await _ in try await query(sql) { found = true }
        return found
    }

    // MARK: Devices

    func device(_ id: DeviceID) async throws -> Device? {
        try await Rows.device(id, lock: true, query)
    }

    func insertDevice(_ device: Device) async throws -> Bool {
        try await returnsRow(
            """
            INSERT INTO devices (\(unescaped: Rows.deviceColumns))
            VALUES (\(device.id.rawValue), \(device.state.rawValue), \(device.owner), \(device.model),
                    \(RegistryEncoding.metadataJSON(device.metadata)), \(device.proof.kind), \(Rows.proofBytes(device.proof)),
                    \(RegistryEncoding.milliseconds(device.createdAt)), \(RegistryEncoding.milliseconds(device.updatedAt)),
                    \(device.stateBeforeTheft?.rawValue), \(device.group), \(device.registeredBy))
            ON CONFLICT (id) DO NOTHING RETURNING 1
            """)
    }

    /// COPY into a temporary table, then one insert that skips the IDs already taken.
    func insertDevices(_ devices: [Device]) async throws -> Int {
        try await query(
            """
            CREATE TEMP TABLE import_staging (
                id TEXT, state TEXT, owner TEXT, model TEXT, metadata TEXT, proof_kind TEXT, proof BYTEA,
                created_at BIGINT, updated_at BIGINT, registered_by TEXT
            ) ON COMMIT DROP
            """)
        try await connection.copyFrom(table: "import_staging", logger: logger) { writer in
            var buffer = ByteBuffer()
            buffer.reserveCapacity(256 * 1024)
            for device in devices {
                Self.appendCopyRow(device, to: &buffer)
                if buffer.readableBytes > 240 * 1024 {
                    try await writer.write(buffer)
                    buffer.clear()
                }
            }
            if buffer.readableBytes > 0 { try await writer.write(buffer) }
        }
        let rows = try await query(
            """
            WITH inserted AS (
                INSERT INTO devices (id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at, registered_by)
                SELECT id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at, registered_by FROM import_staging
                ON CONFLICT (id) DO NOTHING RETURNING 1
            ) SELECT count(*) FROM inserted
            """)
        var inserted = 0
        for try await count in rows.decode(Int64.self) { inserted = Int(count) }
        try await query("DROP TABLE import_staging")
        return inserted
    }

    func updateDevice(_ device: Device) async throws {
        try await query(
            """
            UPDATE devices SET state = \(device.state.rawValue), owner = \(device.owner), model = \(device.model),
                metadata = \(RegistryEncoding.metadataJSON(device.metadata)), proof_kind = \(device.proof.kind),
                proof = \(Rows.proofBytes(device.proof)), created_at = \(RegistryEncoding.milliseconds(device.createdAt)),
                updated_at = \(RegistryEncoding.milliseconds(device.updatedAt)), stolen_from = \(device.stateBeforeTheft?.rawValue),
                group_id = \(device.group), registered_by = \(device.registeredBy)
            WHERE id = \(device.id.rawValue)
            """)
    }

    // MARK: Certificates

    func certificate(serial: String) async throws -> CertificateRecord? {
        try await Rows.certificates(where: "c.serial = \(serial)", query).first
    }

    func certificates(for id: DeviceID) async throws -> [CertificateRecord] {
        try await Rows.certificates(where: "c.device_id = \(id.rawValue)", query)
    }

    func insertCertificate(_ certificate: CertificateRecord) async throws -> Bool {
        try await returnsRow(
            """
            INSERT INTO certificates (serial, device_id, profile, owner, not_before, not_after, sha256, issued_at)
            VALUES (\(certificate.serial), \(certificate.deviceID?.rawValue), \(certificate.profile), \(certificate.owner),
                    \(RegistryEncoding.milliseconds(certificate.notBefore)), \(RegistryEncoding.milliseconds(certificate.notAfter)),
                    \(certificate.sha256), \(RegistryEncoding.milliseconds(certificate.issuedAt)))
            ON CONFLICT (serial) DO NOTHING RETURNING 1
            """)
    }

    func insertRevocation(serial: String, reason: Int, at time: Date) async throws -> Bool {
        try await returnsRow(
            """
            INSERT INTO revocations (serial, reason, revoked_at) VALUES (\(serial), \(Int32(reason)), \(RegistryEncoding.milliseconds(time)))
            ON CONFLICT (serial) DO NOTHING RETURNING 1
            """)
    }

    // MARK: Owners and tokens

    func owner(_ id: String) async throws -> Owner? { try await Rows.owner(id, query) }

    func insertOwner(_ owner: Owner) async throws -> Bool {
        try await returnsRow(
            """
            INSERT INTO owners (id, name, created_at) VALUES (\(owner.id), \(owner.name), \(RegistryEncoding.milliseconds(owner.createdAt)))
            ON CONFLICT (id) DO NOTHING RETURNING 1
            """)
    }

    func insertAPIToken(_ token: APITokenRecord) async throws -> Bool {
        try await returnsRow(
            """
            INSERT INTO api_tokens (\(unescaped: Rows.tokenColumns))
            VALUES (\(token.id), \(ByteBuffer(bytes: token.secretHMAC)), \(token.role.rawValue), \(token.owner),
                    \(RegistryEncoding.milliseconds(token.createdAt)), \(token.expiresAt.map(RegistryEncoding.milliseconds)))
            ON CONFLICT (id) DO NOTHING RETURNING 1
            """)
    }

    func revokeAPIToken(_ id: String, at time: Date) async throws -> Bool {
        try await returnsRow(
            "UPDATE api_tokens SET revoked_at = \(RegistryEncoding.milliseconds(time)) WHERE id = \(id) AND revoked_at IS NULL RETURNING 1")
    }

    // MARK: Claim codes and enrollment tokens

    func claimCode(for id: DeviceID) async throws -> ClaimCodeRecord? { try await Rows.claimCode(for: id, query) }

    func saveClaimCode(_ record: ClaimCodeRecord) async throws {
        let claimedAt = record.claimedAt.map(RegistryEncoding.milliseconds)
        try await query(
            """
            INSERT INTO claim_codes (device_id, salt, hash, iterations, claimed_by, claimed_at)
            VALUES (\(record.deviceID.rawValue), \(ByteBuffer(bytes: record.salt)), \(ByteBuffer(bytes: record.hash)),
                    \(Int32(record.iterations)), \(record.claimedBy), \(claimedAt))
            ON CONFLICT (device_id) DO UPDATE SET salt = excluded.salt, hash = excluded.hash, iterations = excluded.iterations,
                claimed_by = excluded.claimed_by, claimed_at = excluded.claimed_at
            """)
    }

    func enrollmentToken(secretHMAC: [UInt8]) async throws -> EnrollmentTokenRecord? {
        try await Rows.enrollmentToken(secretHMAC: secretHMAC, query)
    }

    func insertEnrollmentToken(_ token: EnrollmentTokenRecord) async throws -> Bool {
        try await returnsRow(
            """
            INSERT INTO enrollment_tokens (secret_hmac, device_id, owner, expires_at, used_at)
            VALUES (\(ByteBuffer(bytes: token.secretHMAC)), \(token.deviceID.rawValue), \(token.owner),
                    \(RegistryEncoding.milliseconds(token.expiresAt)), \(token.usedAt.map(RegistryEncoding.milliseconds)))
            ON CONFLICT (secret_hmac) DO NOTHING RETURNING 1
            """)
    }

    func markEnrollmentTokenUsed(secretHMAC: [UInt8], at time: Date) async throws {
        try await query(
            "UPDATE enrollment_tokens SET used_at = \(RegistryEncoding.milliseconds(time)) WHERE secret_hmac = \(ByteBuffer(bytes: secretHMAC))")
    }

    // MARK: Groups

    func enrollmentGroup(_ id: String) async throws -> EnrollmentGroup? {
        try await Rows.enrollmentGroups(where: "id = \(id)", query).first
    }

    func insertEnrollmentGroup(_ group: EnrollmentGroup) async throws -> Bool {
        try await returnsRow(
            """
            INSERT INTO enrollment_groups (id, name, ca_certificate, ca_sha256, auto_approve, created_at, id_pattern)
            VALUES (\(group.id), \(group.name), \(ByteBuffer(bytes: group.caCertificateDER)), \(group.caSHA256),
                    \(group.autoApprove), \(RegistryEncoding.milliseconds(group.createdAt)), \(group.idPattern))
            ON CONFLICT DO NOTHING RETURNING 1
            """)
    }

    func deleteEnrollmentGroup(_ id: String) async throws {
        try await query("DELETE FROM enrollment_groups WHERE id = \(id)")
    }

    // MARK: MQTT policies

    func mqttPolicy(_ scope: MQTTPolicyScope) async throws -> MQTTPolicyRecord? {
        try await Rows.mqttPolicies(where: "scope = \(scope.description)", query).first
    }

    func saveMQTTPolicy(_ record: MQTTPolicyRecord) async throws {
        try await query(
            """
            INSERT INTO mqtt_policies (scope, document, updated_at)
            VALUES (\(record.scope.description), \(record.document), \(RegistryEncoding.milliseconds(record.updatedAt)))
            ON CONFLICT (scope) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at
            """)
    }

    func deleteMQTTPolicy(_ scope: MQTTPolicyScope) async throws -> Bool {
        try await returnsRow("DELETE FROM mqtt_policies WHERE scope = \(scope.description) RETURNING 1")
    }

    // MARK: Telemetry and updates

    func insertTelemetry(_ body: String, from device: DeviceID, nonce: String, at time: Date) async throws -> Bool {
        try await returnsRow(
            """
            INSERT INTO telemetry (device_id, received_at, body, nonce)
            VALUES (\(device.rawValue), \(RegistryEncoding.milliseconds(time)), \(body), \(nonce))
            ON CONFLICT (device_id, nonce) DO NOTHING RETURNING 1
            """)
    }

    func updateState(of device: DeviceID, version: String) async throws -> UpdateState? {
        let rows = try await query(
            "SELECT state FROM update_status WHERE device_id = \(device.rawValue) AND version = \(version) FOR UPDATE")
        for try await state in rows.decode(String.self) { return UpdateState(rawValue: state) }
        return nil
    }

    func saveUpdateState(_ report: UpdateReport, at time: Date) async throws {
        try await query(
            """
            INSERT INTO update_status (device_id, version, state, detail, updated_at)
            VALUES (\(report.device.rawValue), \(report.version), \(report.state.rawValue), \(report.detail),
                    \(RegistryEncoding.milliseconds(time)))
            ON CONFLICT (device_id, version) DO UPDATE SET state = excluded.state, detail = excluded.detail,
                updated_at = excluded.updated_at
            """)
    }

    func deleteTelemetry(receivedBefore time: Date, limit: Int) async throws -> Int {
        let rows = try await query(
            """
            WITH gone AS (
                DELETE FROM telemetry WHERE sequence IN (
                    SELECT sequence FROM telemetry WHERE received_at < \(RegistryEncoding.milliseconds(time)) ORDER BY sequence
                    LIMIT \(Int64(limit)))
                RETURNING 1
            ) SELECT count(*) FROM gone
            """)
        for try await count in rows.decode(Int64.self) { return Int(count) }
        return 0
    }

    func trimTelemetry(of id: DeviceID, keeping count: Int) async throws -> Int {
        let rows = try await query(
            """
            WITH gone AS (
                DELETE FROM telemetry WHERE device_id = \(id.rawValue) AND sequence <= (
                    SELECT sequence FROM telemetry WHERE device_id = \(id.rawValue) ORDER BY sequence DESC LIMIT 1 OFFSET \(Int64(count)))
                RETURNING 1
            ) SELECT count(*) FROM gone
            """)
        for try await deleted in rows.decode(Int64.self) { return Int(deleted) }
        return 0
    }

    // MARK: Security events

    func insertSecurityEvent(_ event: SecurityEvent) async throws {
        try await query(
            """
            INSERT INTO security_events (time_ms, kind, device_id, serial, address, detail)
            VALUES (\(RegistryEncoding.milliseconds(event.time)), \(event.kind), \(event.device), \(event.serial), \(event.address),
                    \(event.detail))
            """)
    }

    func trimSecurityEvents(keeping count: Int) async throws {
        try await query(
            """
            DELETE FROM security_events WHERE sequence <= (
                SELECT sequence FROM security_events ORDER BY sequence DESC LIMIT 1 OFFSET \(Int64(count)))
            """)
    }

    // MARK: Audit

    func auditTail() async throws -> AuditLink? {
        guard audited else { throw RegistryError(.storage, "an unaudited transaction cannot append to the audit log") }
        let rows = try await query("SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1")
        for try await (sequence, hash) in rows.decode((Int64, ByteBuffer).self) {
            return AuditLink(sequence: sequence, hash: Array(hash.readableBytesView))
        }
        return nil
    }

    func insertAuditEntry(_ entry: AuditEntry) async throws {
        try await query(
            """
            INSERT INTO audit_log (sequence, time_ms, actor, action, subject, before, after, previous_hash, hash, mac)
            VALUES (\(entry.sequence), \(entry.timeMilliseconds), \(entry.actor), \(entry.action), \(entry.subject),
                    \(entry.before), \(entry.after), \(ByteBuffer(bytes: entry.previousHash)), \(ByteBuffer(bytes: entry.hash)),
                    \(entry.mac.map { ByteBuffer(bytes: $0) }))
            """)
    }

    // MARK: Savepoints

    func savepoint<T>(_ body: () async throws -> T) async throws -> T {
        try await query("SAVEPOINT registrar")
        do {
            let result = try await body()
            try await query("RELEASE SAVEPOINT registrar")
            return result
        } catch {
            try await query("ROLLBACK TO SAVEPOINT registrar")
            try await query("RELEASE SAVEPOINT registrar")
            throw error is PSQLError ? PostgresRegistryStore.mapped(error) : error
        }
    }

    // MARK: COPY

    /// One row of COPY text format: tab-separated, `\N` for NULL, backslash escapes, bytea as `\\x<hex>`.
    static func appendCopyRow(_ device: Device, to buffer: inout ByteBuffer) {
        func text(_ value: String?) {
            guard let value else {
                buffer.writeStaticString("\\N")
                return
            }
            for byte in value.utf8 {
                switch byte {
                case 0x5C: buffer.writeStaticString("\\\\")
                case 0x09: buffer.writeStaticString("\\t")
                case 0x0A: buffer.writeStaticString("\\n")
                case 0x0D: buffer.writeStaticString("\\r")
                default: buffer.writeInteger(byte)
                }
            }
        }
        let hexDigits = Array("0123456789abcdef".utf8)
        let tab = UInt8(0x09)
        text(device.id.rawValue)
        buffer.writeInteger(tab)
        text(device.state.rawValue)
        buffer.writeInteger(tab)
        text(device.owner)
        buffer.writeInteger(tab)
        text(device.model)
        buffer.writeInteger(tab)
        text(RegistryEncoding.metadataJSON(device.metadata))
        buffer.writeInteger(tab)
        text(device.proof.kind)
        buffer.writeInteger(tab)
        switch device.proof {
        case .secret(let bytes), .publicKey(let bytes):
            buffer.writeStaticString("\\\\x")
            for byte in bytes {
                buffer.writeInteger(hexDigits[Int(byte >> 4)])
                buffer.writeInteger(hexDigits[Int(byte & 0x0F)])
            }
        case .none:
            buffer.writeStaticString("\\N")
        }
        buffer.writeInteger(tab)
        buffer.writeString(String(RegistryEncoding.milliseconds(device.createdAt)))
        buffer.writeInteger(tab)
        buffer.writeString(String(RegistryEncoding.milliseconds(device.updatedAt)))
        buffer.writeInteger(tab)
        text(device.registeredBy)
        buffer.writeInteger(UInt8(0x0A))
    }
}
