import FleetwardPKI
import FleetwardRegistry
import Foundation

/// The row operations of one SQLite write transaction (BEGIN IMMEDIATE: the database's write
/// lock is held from the first statement, so what a transaction reads stays as read).
struct SQLiteTransaction: RegistryTransaction {
    let connection: SQLiteRegistryStore.Connection

    /// Runs one statement that changes rows; returns how many it changed.
    private func change(_ sql: String, _ bind: (SQLiteStatement) -> Void) throws -> Int {
        let statement = try connection.statement(sql)
        bind(statement)
        try statement.step()
        return connection.db.changes
    }

    // MARK: Devices

    func device(_ id: DeviceID) async throws -> Device? { try Rows.device(id, connection) }

    func insertDevice(_ device: Device) async throws -> Bool {
        try await insertDevices([device]) == 1
    }

    func insertDevices(_ devices: [Device]) async throws -> Int {
        let statement = try connection.statement(
            "INSERT INTO devices (\(Rows.deviceColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING")
        var inserted = 0
        for device in devices {
            Rows.bind(device, to: statement)
            try statement.step()
            inserted += connection.db.changes
            statement.reset()
        }
        return inserted
    }

    func updateDevice(_ device: Device) async throws {
        _ = try change(
            """
            UPDATE devices SET state = ?2, owner = ?3, model = ?4, metadata = ?5, proof_kind = ?6, proof = ?7,
                created_at = ?8, updated_at = ?9, stolen_from = ?10, group_id = ?11, registered_by = ?12 WHERE id = ?1
            """
        ) { Rows.bind(device, to: $0) }
    }

    // MARK: Certificates

    func certificate(serial: String) async throws -> CertificateRecord? { try Rows.certificate(serial: serial, connection) }

    func certificates(for id: DeviceID) async throws -> [CertificateRecord] { try Rows.certificates(for: id, connection) }

    func insertCertificate(_ certificate: CertificateRecord) async throws -> Bool {
        try change(
            """
            INSERT INTO certificates (serial, device_id, profile, owner, not_before, not_after, sha256, issued_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING
            """
        ) { statement in
            statement.bind(1, certificate.serial)
            statement.bind(2, certificate.deviceID?.rawValue)
            statement.bind(3, certificate.profile)
            statement.bind(4, certificate.owner)
            statement.bind(5, RegistryEncoding.milliseconds(certificate.notBefore))
            statement.bind(6, RegistryEncoding.milliseconds(certificate.notAfter))
            statement.bind(7, certificate.sha256)
            statement.bind(8, RegistryEncoding.milliseconds(certificate.issuedAt))
        } == 1
    }

    func insertRevocation(serial: String, reason: Int, at time: Date) async throws -> Bool {
        try change("INSERT INTO revocations (serial, reason, revoked_at) VALUES (?, ?, ?) ON CONFLICT (serial) DO NOTHING") {
            $0.bind(1, serial)
            $0.bind(2, Int64(reason))
            $0.bind(3, RegistryEncoding.milliseconds(time))
        } == 1
    }

    // MARK: Owners and tokens

    func owner(_ id: String) async throws -> Owner? { try Rows.owner(id, connection) }

    func insertOwner(_ owner: Owner) async throws -> Bool {
        try change("INSERT INTO owners (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING") {
            $0.bind(1, owner.id)
            $0.bind(2, owner.name)
            $0.bind(3, RegistryEncoding.milliseconds(owner.createdAt))
        } == 1
    }

    func insertAPIToken(_ token: APITokenRecord) async throws -> Bool {
        try change(
            "INSERT INTO api_tokens (\(Rows.tokenColumns)) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        ) {
            $0.bind(1, token.id)
            $0.bind(2, token.secretHMAC)
            $0.bind(3, token.role.rawValue)
            $0.bind(4, token.owner)
            $0.bind(5, RegistryEncoding.milliseconds(token.createdAt))
            $0.bind(6, token.expiresAt.map(RegistryEncoding.milliseconds))
        } == 1
    }

    func revokeAPIToken(_ id: String, at time: Date) async throws -> Bool {
        try change("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL") {
            $0.bind(1, RegistryEncoding.milliseconds(time))
            $0.bind(2, id)
        } == 1
    }

    // MARK: Claim codes and enrollment tokens

    func claimCode(for id: DeviceID) async throws -> ClaimCodeRecord? { try Rows.claimCode(for: id, connection) }

    func saveClaimCode(_ record: ClaimCodeRecord) async throws {
        _ = try change(
            """
            INSERT INTO claim_codes (device_id, salt, hash, iterations, claimed_by, claimed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
            ON CONFLICT (device_id) DO UPDATE SET salt = ?2, hash = ?3, iterations = ?4, claimed_by = ?5, claimed_at = ?6
            """
        ) {
            $0.bind(1, record.deviceID.rawValue)
            $0.bind(2, record.salt)
            $0.bind(3, record.hash)
            $0.bind(4, Int64(record.iterations))
            $0.bind(5, record.claimedBy)
            $0.bind(6, record.claimedAt.map(RegistryEncoding.milliseconds))
        }
    }

    func enrollmentToken(secretHMAC: [UInt8]) async throws -> EnrollmentTokenRecord? {
        try Rows.enrollmentToken(secretHMAC: secretHMAC, connection)
    }

    func insertEnrollmentToken(_ token: EnrollmentTokenRecord) async throws -> Bool {
        try change(
            """
            INSERT INTO enrollment_tokens (secret_hmac, device_id, owner, expires_at, used_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (secret_hmac) DO NOTHING
            """
        ) {
            $0.bind(1, token.secretHMAC)
            $0.bind(2, token.deviceID.rawValue)
            $0.bind(3, token.owner)
            $0.bind(4, RegistryEncoding.milliseconds(token.expiresAt))
            $0.bind(5, token.usedAt.map(RegistryEncoding.milliseconds))
        } == 1
    }

    func markEnrollmentTokenUsed(secretHMAC: [UInt8], at time: Date) async throws {
        _ = try change("UPDATE enrollment_tokens SET used_at = ? WHERE secret_hmac = ?") {
            $0.bind(1, RegistryEncoding.milliseconds(time))
            $0.bind(2, secretHMAC)
        }
    }

    // MARK: Groups

    func enrollmentGroup(_ id: String) async throws -> EnrollmentGroup? { try Rows.enrollmentGroup(id, connection) }

    func insertEnrollmentGroup(_ group: EnrollmentGroup) async throws -> Bool {
        try change("INSERT INTO enrollment_groups (\(Rows.groupColumns)) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING") {
            $0.bind(1, group.id)
            $0.bind(2, group.name)
            $0.bind(3, group.caCertificateDER)
            $0.bind(4, group.caSHA256)
            $0.bind(5, Int64(group.autoApprove ? 1 : 0))
            $0.bind(6, RegistryEncoding.milliseconds(group.createdAt))
            $0.bind(7, group.idPattern)
        } == 1
    }

    func deleteEnrollmentGroup(_ id: String) async throws {
        _ = try change("DELETE FROM enrollment_groups WHERE id = ?") { $0.bind(1, id) }
    }

    // MARK: MQTT policies

    func mqttPolicy(_ scope: MQTTPolicyScope) async throws -> MQTTPolicyRecord? { try Rows.mqttPolicy(scope, connection) }

    func saveMQTTPolicy(_ record: MQTTPolicyRecord) async throws {
        _ = try change(
            """
            INSERT INTO mqtt_policies (scope, document, updated_at) VALUES (?, ?, ?)
            ON CONFLICT (scope) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at
            """
        ) {
            $0.bind(1, record.scope.description)
            $0.bind(2, record.document)
            $0.bind(3, RegistryEncoding.milliseconds(record.updatedAt))
        }
    }

    func deleteMQTTPolicy(_ scope: MQTTPolicyScope) async throws -> Bool {
        try change("DELETE FROM mqtt_policies WHERE scope = ?") { $0.bind(1, scope.description) } == 1
    }

    // MARK: Telemetry and updates

    func insertTelemetry(_ body: String, from device: DeviceID, nonce: String, at time: Date) async throws -> Bool {
        try change(
            "INSERT INTO telemetry (device_id, received_at, body, nonce) VALUES (?, ?, ?, ?) ON CONFLICT (device_id, nonce) DO NOTHING"
        ) {
            $0.bind(1, device.rawValue)
            $0.bind(2, RegistryEncoding.milliseconds(time))
            $0.bind(3, body)
            $0.bind(4, nonce)
        } == 1
    }

    func updateState(of device: DeviceID, version: String) async throws -> UpdateState? {
        let statement = try connection.statement("SELECT state FROM update_status WHERE device_id = ? AND version = ?")
        statement.bind(1, device.rawValue)
        statement.bind(2, version)
        return try statement.step() ? statement.text(0).flatMap(UpdateState.init(rawValue:)) : nil
    }

    func saveUpdateState(_ report: UpdateReport, at time: Date) async throws {
        _ = try change(
            """
            INSERT INTO update_status (device_id, version, state, detail, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
            ON CONFLICT (device_id, version) DO UPDATE SET state = ?3, detail = ?4, updated_at = ?5
            """
        ) {
            $0.bind(1, report.device.rawValue)
            $0.bind(2, report.version)
            $0.bind(3, report.state.rawValue)
            $0.bind(4, report.detail)
            $0.bind(5, RegistryEncoding.milliseconds(time))
        }
    }

    func deleteTelemetry(receivedBefore time: Date, limit: Int) async throws -> Int {
        // Sequence grows with arrival time, so the oldest rows come first and the scan stops early.
        try change(
            """
            DELETE FROM telemetry WHERE sequence IN (
                SELECT sequence FROM telemetry WHERE received_at < ? ORDER BY sequence LIMIT ?)
            """
        ) {
            $0.bind(1, RegistryEncoding.milliseconds(time))
            $0.bind(2, Int64(limit))
        }
    }

    func trimTelemetry(of id: DeviceID, keeping count: Int) async throws -> Int {
        try change(
            """
            DELETE FROM telemetry WHERE device_id = ?1 AND sequence <= (
                SELECT sequence FROM telemetry WHERE device_id = ?1 ORDER BY sequence DESC LIMIT 1 OFFSET ?2)
            """
        ) {
            $0.bind(1, id.rawValue)
            $0.bind(2, Int64(count))
        }
    }

    // MARK: Security events

    func insertSecurityEvent(_ event: SecurityEvent) async throws {
        _ = try change(
            "INSERT INTO security_events (time_ms, kind, device_id, serial, address, detail) VALUES (?, ?, ?, ?, ?, ?)"
        ) {
            $0.bind(1, RegistryEncoding.milliseconds(event.time))
            $0.bind(2, event.kind)
            $0.bind(3, event.device)
            $0.bind(4, event.serial)
            $0.bind(5, event.address)
            $0.bind(6, event.detail)
        }
    }

    func trimSecurityEvents(keeping count: Int) async throws {
        _ = try change(
            "DELETE FROM security_events WHERE sequence <= (SELECT sequence FROM security_events ORDER BY sequence DESC LIMIT 1 OFFSET ?)"
        ) { $0.bind(1, Int64(count)) }
    }

    // MARK: Audit

    func auditTail() async throws -> AuditLink? {
        let statement = try connection.statement("SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1")
        guard try statement.step() else { return nil }
        return AuditLink(sequence: statement.int64(0), hash: statement.blob(1) ?? [])
    }

    func insertAuditEntry(_ entry: AuditEntry) async throws {
        _ = try change(
            "INSERT INTO audit_log (sequence, time_ms, actor, action, subject, before, after, previous_hash, hash, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ) {
            $0.bind(1, entry.sequence)
            $0.bind(2, entry.timeMilliseconds)
            $0.bind(3, entry.actor)
            $0.bind(4, entry.action)
            $0.bind(5, entry.subject)
            $0.bind(6, entry.before)
            $0.bind(7, entry.after)
            $0.bind(8, entry.previousHash)
            $0.bind(9, entry.hash)
            $0.bind(10, entry.mac)
        }
    }

    // MARK: Savepoints

    func savepoint<T>(_ body: () async throws -> T) async throws -> T {
        try connection.statement("SAVEPOINT registrar").step()
        do {
            let result = try await body()
            try connection.statement("RELEASE registrar").step()
            return result
        } catch {
            try connection.statement("ROLLBACK TO registrar").step()
            try connection.statement("RELEASE registrar").step()
            throw error
        }
    }
}
