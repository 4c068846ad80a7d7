public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import Logging
import NIOCore
import PostgresNIO

// Owners, transfers, claim codes, enrollment tokens, enrollment groups and token management.
extension PostgresRegistryStore {
    /// Runs a read outside any transaction, mapping driver errors.
    private func read<T: Sendable>(_ body: (PostgresClient, Logger) async throws -> T) async throws -> T {
        do {
            return try await body(client, logger)
        } catch {
            throw Self.mapped(error)
        }
    }

    // MARK: API tokens

    public func apiTokens() async throws -> [APITokenRecord] {
        try await read { client, logger in
            let rows = try await client.query(
                "SELECT id, secret_hmac, role, owner, created_at, expires_at FROM api_tokens WHERE revoked_at IS NULL ORDER BY id",
                logger: logger
            )
            var tokens: [APITokenRecord] = []
            for try await (id, hmac, role, owner, created, expires) in rows.decode(
                (String, ByteBuffer, String, String?, Int64, Int64?).self)
            {
                guard let role = Role(rawValue: role) else { throw RegistryError(.storage, "an api token row is malformed") }
                tokens.append(
                    APITokenRecord(
                        id: id, secretHMAC: Array(hmac.readableBytesView), role: role, owner: owner,
                        createdAt: RegistryEncoding.date(created), expiresAt: expires.map(RegistryEncoding.date)
                    )
                )
            }
            return tokens
        }
    }

    public func revokeAPIToken(_ id: String, by actor: Actor, at time: Date) async throws {
        let logger = self.logger
        try await transaction(audited: true) { connection in
            let rows = try await connection.query(
                "UPDATE api_tokens SET revoked_at = \(RegistryEncoding.milliseconds(time)) WHERE id = \(id) AND revoked_at IS NULL RETURNING 1",
                logger: logger
            )
            var changed = false
            for try await _ in rows { changed = true }
            guard changed else { throw RegistryError(.notFound, "no API token \(id)") }
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "token.revoke", subject: "token:\(id)", before: nil, after: nil
            )
        }
    }

    // MARK: Owners

    public func insert(_ owner: Owner, by actor: Actor, at time: Date) async throws {
        let logger = self.logger
        try await transaction(audited: true) { connection in
            guard try await Self.insertOwner(owner, connection, logger) else {
                throw RegistryError(.duplicate, "owner \(owner.id) exists")
            }
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "owner.create", subject: "owner:\(owner.id)", before: nil,
                after: RegistryEncoding.ownerJSON(owner)
            )
        }
    }

    /// Inserts an owner unless one with its ID exists; true when inserted.
    static func insertOwner(_ owner: Owner, _ connection: PostgresConnection, _ logger: Logger) async throws -> Bool {
        let rows = try await connection.query(
            """
            INSERT INTO owners (id, name, created_at) VALUES (\(owner.id), \(owner.name), \(RegistryEncoding.milliseconds(owner.createdAt)))
            ON CONFLICT (id) DO NOTHING RETURNING 1
            """,
            logger: logger
        )
        var inserted = false
        for try await _ in rows { inserted = true }
        return inserted
    }

    public func owner(_ id: String) async throws -> Owner? {
        try await read { client, logger in
            let rows = try await client.query("SELECT id, name, created_at FROM owners WHERE id = \(id)", logger: logger)
            for try await row in rows.decode((String, String?, Int64).self) { return try Self.owner(row) }
            return nil
        }
    }

    public func owners(after cursor: String?, limit: Int) async throws -> [Owner] {
        try await read { client, logger in
            let rows = try await client.query(
                """
                SELECT id, name, created_at FROM owners WHERE (\(cursor)::text IS NULL OR id > \(cursor))
                ORDER BY id LIMIT \(max(0, min(limit, 10_000)))
                """,
                logger: logger
            )
            var owners: [Owner] = []
            for try await row in rows.decode((String, String?, Int64).self) { owners.append(try Self.owner(row)) }
            return owners
        }
    }

    private static func owner(_ row: (String, String?, Int64)) throws -> Owner {
        guard let owner = try? Owner(id: row.0, name: row.1, createdAt: RegistryEncoding.date(row.2)) else {
            throw RegistryError(.storage, "an owner row is malformed")
        }
        return owner
    }

    public func transfer(_ id: DeviceID, to newOwner: String, by actor: Actor, at time: Date) async throws -> Device {
        let logger = self.logger
        return try await transaction(audited: true) { connection in
            guard var device = try await Self.readDevice(id, connection, logger) else { throw RegistryError(.notFound, "no device \(id)") }
            try OwnershipRules.checkTransfer(of: device, to: newOwner, by: actor)
            let rows = try await connection.query("SELECT 1 FROM owners WHERE id = \(newOwner)", logger: logger)
            var exists = false
            for try await _ in rows { exists = true }
            guard exists else { throw RegistryError(.notFound, "no owner \(newOwner)") }
            let before = RegistryEncoding.auditJSON(device)
            device.owner = newOwner
            device.updatedAt = time
            try await Self.updateOwner(device, connection, logger)
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "device.transfer", subject: "device:\(id)", before: before,
                after: RegistryEncoding.auditJSON(device)
            )
            return device
        }
    }

    private static func updateOwner(_ device: Device, _ connection: PostgresConnection, _ logger: Logger) async throws {
        try await connection.query(
            """
            UPDATE devices SET owner = \(device.owner), updated_at = \(RegistryEncoding.milliseconds(device.updatedAt))
            WHERE id = \(device.id.rawValue)
            """,
            logger: logger
        )
    }

    // MARK: Claim codes

    public func setClaimCode(_ record: ClaimCodeRecord, by actor: Actor, at time: Date) async throws {
        let logger = self.logger
        try await transaction(audited: true) { connection in
            guard let device = try await Self.readDevice(record.deviceID, connection, logger) else {
                throw RegistryError(.notFound, "no device \(record.deviceID)")
            }
            guard device.owner == nil else { throw RegistryError(.duplicate, "device \(device.id) is already claimed") }
            try await connection.query(
                """
                INSERT INTO claim_codes (device_id, salt, hash, iterations, claimed_by, claimed_at)
                VALUES (\(record.deviceID.rawValue), \(ByteBuffer(bytes: record.salt)), \(ByteBuffer(bytes: record.hash)),
                        \(record.iterations), NULL, NULL)
                ON CONFLICT (device_id) DO UPDATE SET salt = excluded.salt, hash = excluded.hash,
                    iterations = excluded.iterations, claimed_by = NULL, claimed_at = NULL
                """,
                logger: logger
            )
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "device.claim-code", subject: "device:\(device.id)", before: nil,
                after: nil
            )
        }
    }

    public func claimCode(for id: DeviceID) async throws -> ClaimCodeRecord? {
        try await read { client, logger in
            let rows = try await client.query(
                "SELECT salt, hash, iterations, claimed_by, claimed_at FROM claim_codes WHERE device_id = \(id.rawValue)", logger: logger)
            for try await (salt, hash, iterations, claimedBy, claimedAt) in rows.decode(
                (ByteBuffer, ByteBuffer, Int32, String?, Int64?).self)
            {
                return ClaimCodeRecord(
                    deviceID: id, salt: Array(salt.readableBytesView), hash: Array(hash.readableBytesView), iterations: Int(iterations),
                    claimedBy: claimedBy, claimedAt: claimedAt.map(RegistryEncoding.date)
                )
            }
            return nil
        }
    }

    public func claim(_ id: DeviceID, verifiedHash: [UInt8], by actor: Actor, at time: Date) async throws -> Device {
        let logger = self.logger
        return try await transaction(audited: true) { connection in
            guard var device = try await Self.readDevice(id, connection, logger) else { throw RegistryError(.notFound, "no device \(id)") }
            let owner = try OwnershipRules.checkClaim(of: device, by: actor)
            let rows = try await connection.query(
                """
                UPDATE claim_codes SET claimed_by = \(owner), claimed_at = \(RegistryEncoding.milliseconds(time))
                WHERE device_id = \(id.rawValue) AND hash = \(ByteBuffer(bytes: verifiedHash)) AND claimed_by IS NULL RETURNING 1
                """,
                logger: logger
            )
            var used = false
            for try await _ in rows { used = true }
            guard used else { throw RegistryError(.forbidden, "the claim code of device \(id) is not valid") }
            _ = try await Self.insertOwner(try Owner(id: owner, createdAt: time), connection, logger)
            let before = RegistryEncoding.auditJSON(device)
            device.owner = owner
            device.updatedAt = time
            try await Self.updateOwner(device, connection, logger)
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "device.claim", subject: "device:\(id)", before: before,
                after: RegistryEncoding.auditJSON(device)
            )
            return device
        }
    }

    // MARK: Enrollment tokens

    public func insert(_ token: EnrollmentTokenRecord, by actor: Actor, at time: Date) async throws {
        let logger = self.logger
        try await transaction(audited: true) { connection in
            guard try await Self.readDevice(token.deviceID, connection, logger) != nil else {
                throw RegistryError(.notFound, "no device \(token.deviceID)")
            }
            try await connection.query(
                """
                INSERT INTO enrollment_tokens (secret_hmac, device_id, owner, expires_at, used_at)
                VALUES (\(ByteBuffer(bytes: token.secretHMAC)), \(token.deviceID.rawValue), \(token.owner),
                        \(RegistryEncoding.milliseconds(token.expiresAt)), NULL)
                """,
                logger: logger
            )
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "device.enrollment-token", subject: "device:\(token.deviceID)",
                before: nil, after: RegistryEncoding.enrollmentTokenJSON(token)
            )
        }
    }

    public func enrollmentToken(secretHMAC: [UInt8], for id: DeviceID, at time: Date) async throws -> EnrollmentTokenRecord? {
        try await read { client, logger in
            let now = RegistryEncoding.milliseconds(time)
            let rows = try await client.query(
                """
                SELECT owner, expires_at FROM enrollment_tokens
                WHERE secret_hmac = \(ByteBuffer(bytes: secretHMAC)) AND device_id = \(id.rawValue) AND used_at IS NULL AND expires_at > \(now)
                """,
                logger: logger
            )
            for try await (owner, expires) in rows.decode((String?, Int64).self) {
                return EnrollmentTokenRecord(secretHMAC: secretHMAC, deviceID: id, owner: owner, expiresAt: RegistryEncoding.date(expires))
            }
            return nil
        }
    }

    public func redeemEnrollmentToken(secretHMAC: [UInt8], for id: DeviceID, at time: Date) async throws -> EnrollmentTokenRecord {
        let logger = self.logger
        return try await transaction(audited: true) { connection in
            let now = RegistryEncoding.milliseconds(time)
            let rows = try await connection.query(
                """
                UPDATE enrollment_tokens SET used_at = \(now)
                WHERE secret_hmac = \(ByteBuffer(bytes: secretHMAC)) AND device_id = \(id.rawValue) AND used_at IS NULL AND expires_at > \(now)
                RETURNING owner, expires_at
                """,
                logger: logger
            )
            var record: EnrollmentTokenRecord?
            for try await (owner, expires) in rows.decode((String?, Int64).self) {
                record = EnrollmentTokenRecord(
                    secretHMAC: secretHMAC, deviceID: id, owner: owner, expiresAt: RegistryEncoding.date(expires), usedAt: time)
            }
            guard let record else {
                throw RegistryError(.forbidden, "the enrollment token for device \(id) is not valid, used or expired")
            }
            try await Self.appendAudit(
                connection, logger, time: time, actor: Actor(role: .owner, name: "device:\(id)", owner: record.owner),
                action: "enrollment-token.redeem", subject: "device:\(id)", before: nil, after: nil
            )
            return record
        }
    }

    // MARK: Enrollment groups

    public func insert(_ group: EnrollmentGroup, by actor: Actor, at time: Date) async throws {
        let logger = self.logger
        do {
            try await transaction(audited: true) { connection in
                try await connection.query(
                    """
                    INSERT INTO enrollment_groups (id, name, ca_certificate, ca_sha256, auto_approve, created_at)
                    VALUES (\(group.id), \(group.name), \(ByteBuffer(bytes: group.caCertificateDER)), \(group.caSHA256),
                            \(group.autoApprove), \(RegistryEncoding.milliseconds(group.createdAt)))
                    """,
                    logger: logger
                )
                try await Self.appendAudit(
                    connection, logger, time: time, actor: actor, action: "group.create", subject: "group:\(group.id)", before: nil,
                    after: RegistryEncoding.groupJSON(group)
                )
            }
        } catch let error as RegistryError where error.code == .duplicate {
            throw RegistryError(.duplicate, "an enrollment group with this name or CA exists")
        }
    }

    typealias GroupRow = (String, String, ByteBuffer, String, Bool, Int64)

    public func enrollmentGroup(_ id: String) async throws -> EnrollmentGroup? {
        try await read { client, logger in
            let rows = try await client.query(
                "SELECT id, name, ca_certificate, ca_sha256, auto_approve, created_at FROM enrollment_groups WHERE id = \(id)",
                logger: logger)
            for try await row in rows.decode(GroupRow.self) { return Self.group(row) }
            return nil
        }
    }

    public func enrollmentGroups() async throws -> [EnrollmentGroup] {
        try await read { client, logger in
            let rows = try await client.query(
                "SELECT id, name, ca_certificate, ca_sha256, auto_approve, created_at FROM enrollment_groups ORDER BY name", logger: logger)
            var groups: [EnrollmentGroup] = []
            for try await row in rows.decode(GroupRow.self) { groups.append(Self.group(row)) }
            return groups
        }
    }

    public func deleteEnrollmentGroup(_ id: String, by actor: Actor, at time: Date) async throws {
        let logger = self.logger
        try await transaction(audited: true) { connection in
            let rows = try await connection.query(
                "DELETE FROM enrollment_groups WHERE id = \(id) RETURNING id, name, ca_certificate, ca_sha256, auto_approve, created_at",
                logger: logger
            )
            var deleted: EnrollmentGroup?
            for try await row in rows.decode(GroupRow.self) { deleted = Self.group(row) }
            guard let deleted else { throw RegistryError(.notFound, "no enrollment group \(id)") }
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "group.delete", subject: "group:\(id)",
                before: RegistryEncoding.groupJSON(deleted), after: nil
            )
        }
    }

    private static func group(_ row: GroupRow) -> EnrollmentGroup {
        EnrollmentGroup(
            id: row.0, name: row.1, caCertificateDER: Array(row.2.readableBytesView), caSHA256: row.3, autoApprove: row.4,
            createdAt: RegistryEncoding.date(row.5)
        )
    }
}

// Certificates issued.
extension PostgresRegistryStore {
    public func insert(_ certificate: CertificateRecord, by actor: Actor, at time: Date) async throws {
        try await insert([certificate], by: actor, at: time)
    }

    public func insert(_ certificates: [CertificateRecord], by actor: Actor, at time: Date) async throws {
        let logger = self.logger
        do {
            try await transaction(audited: true) { connection in
                for certificate in certificates {
                    if let id = certificate.deviceID, try await Self.readDevice(id, connection, logger) == nil {
                        throw RegistryError(.notFound, "no device \(id)")
                    }
                    try await Self.insertCertificateRow(certificate, connection, logger)
                    try await Self.appendAudit(
                        connection, logger, time: time, actor: actor, action: "certificate.issue",
                        subject: "certificate:\(certificate.serial)", before: nil, after: RegistryEncoding.certificateJSON(certificate)
                    )
                }
            }
        } catch let error as RegistryError where error.code == .duplicate {
            throw RegistryError(.duplicate, "a certificate in the batch is already recorded")
        }
    }

    public func revokedCertificates(profiles: [String]) async throws -> [RevokedEntry] {
        do {
            let rows = try await client.query(
                """
                SELECT r.serial, r.reason, r.revoked_at FROM revocations r JOIN certificates c ON c.serial = r.serial
                WHERE c.profile = ANY(\(profiles)) ORDER BY r.serial
                """,
                logger: logger
            )
            var entries: [RevokedEntry] = []
            for try await (serial, reason, time) in rows.decode((String, Int32, Int64).self) {
                entries.append(RevokedEntry(serialHex: serial, revocationDate: RegistryEncoding.date(time), reasonCode: Int(reason)))
            }
            return entries
        } catch {
            throw Self.mapped(error)
        }
    }

    public func insertTelemetry(_ body: String, from device: DeviceID, nonce: String, at time: Date) async throws {
        do {
            try await client.query(
                """
                INSERT INTO telemetry (device_id, received_at, body, nonce)
                VALUES (\(device.rawValue), \(RegistryEncoding.milliseconds(time)), \(body), \(nonce))
                """,
                logger: logger)
        } catch {
            let mapped = Self.mapped(error)
            if mapped.code == .invalidInput { throw RegistryError(.notFound, "no device \(device)") }
            throw mapped
        }
    }

    public func telemetry(for device: DeviceID, limit: Int) async throws -> [TelemetryRecord] {
        do {
            let rows = try await client.query(
                """
                SELECT sequence, received_at, body FROM telemetry WHERE device_id = \(device.rawValue)
                ORDER BY sequence DESC LIMIT \(Int64(limit))
                """,
                logger: logger)
            var records: [TelemetryRecord] = []
            for try await (sequence, time, body) in rows.decode((Int64, Int64, String).self) {
                records.append(
                    TelemetryRecord(sequence: sequence, device: device.rawValue, receivedAt: RegistryEncoding.date(time), body: body))
            }
            return records
        } catch {
            throw Self.mapped(error)
        }
    }

    public func recordUpdate(_ report: UpdateReport, at time: Date) async throws {
        do {
            try await client.query(
                """
                INSERT INTO update_status (device_id, version, state, detail, updated_at)
                VALUES (\(report.device.rawValue), \(report.version), \(report.state.rawValue), \(report.detail),
                    \(RegistryEncoding.milliseconds(time)))
                \(unescaped: UpdateReport.upsertConflictClause)
                """,
                logger: logger)
        } catch {
            let mapped = Self.mapped(error)
            if mapped.code == .invalidInput { throw RegistryError(.notFound, "no device \(report.device)") }
            throw mapped
        }
    }

    public func updateCounts(version: String) async throws -> [UpdateState: Int] {
        do {
            let rows = try await client.query(
                "SELECT state, count(*)::BIGINT FROM update_status WHERE version = \(version) GROUP BY state", logger: logger)
            var counts: [UpdateState: Int] = [:]
            for try await (state, count) in rows.decode((String, Int64).self) {
                if let state = UpdateState(rawValue: state) { counts[state] = Int(count) }
            }
            return counts
        } catch {
            throw Self.mapped(error)
        }
    }

    public func revocationCount() async throws -> Int {
        do {
            let rows = try await client.query("SELECT count(*)::BIGINT FROM revocations", logger: logger)
            for try await count in rows.decode(Int64.self) { return Int(count) }
            return 0
        } catch {
            throw Self.mapped(error)
        }
    }

    public func certificates(for id: DeviceID) async throws -> [CertificateRecord] {
        do {
            let rows = try await client.query(
                """
                SELECT c.serial, c.profile, c.owner, c.not_before, c.not_after, c.sha256, c.issued_at, r.reason, r.revoked_at
                FROM certificates c LEFT JOIN revocations r ON r.serial = c.serial
                WHERE c.device_id = \(id.rawValue) ORDER BY c.issued_at DESC, c.serial
                """,
                logger: logger
            )
            var records: [CertificateRecord] = []
            for try await row in rows.decode((String, String, String?, Int64, Int64, String, Int64, Int32?, Int64?).self) {
                records.append(
                    CertificateRecord(
                        serial: row.0, deviceID: id, profile: row.1, owner: row.2, notBefore: RegistryEncoding.date(row.3),
                        notAfter: RegistryEncoding.date(row.4), sha256: row.5, issuedAt: RegistryEncoding.date(row.6),
                        revocation: row.7.map { CertificateRecord.Revocation(reason: Int($0), time: RegistryEncoding.date(row.8 ?? 0)) }
                    )
                )
            }
            return records
        } catch {
            throw Self.mapped(error)
        }
    }
}

// Enrollment.
extension PostgresRegistryStore {
    public func enroll(_ record: EnrollmentRecord, by actor: Actor, at time: Date) async throws -> Device {
        let logger = self.logger
        return try await transaction(audited: true) { connection in
            try await Self.enrollOne(record, by: actor, at: time, connection, logger)
        }
    }

    public func enroll(batch: [(record: EnrollmentRecord, actor: Actor)], at time: Date) async throws -> [Result<Device, RegistryError>] {
        let logger = self.logger
        return try await transaction(audited: true) { connection in
            var results: [Result<Device, RegistryError>] = []
            for (record, actor) in batch {
                try await connection.query("SAVEPOINT enrollment", logger: logger)
                do {
                    results.append(.success(try await Self.enrollOne(record, by: actor, at: time, connection, logger)))
                    try await connection.query("RELEASE SAVEPOINT enrollment", logger: logger)
                } catch {
                    let mapped = Self.mapped(error)
                    guard mapped.code != .storage else { throw mapped }
                    try await connection.query("ROLLBACK TO SAVEPOINT enrollment", logger: logger)
                    results.append(.failure(mapped))
                }
            }
            return results
        }
    }

    /// Inserts one certificate row inside the caller's transaction.
    static func insertCertificateRow(_ certificate: CertificateRecord, _ connection: PostgresConnection, _ logger: Logger) async throws {
        try await connection.query(
            """
            INSERT INTO certificates (serial, device_id, profile, owner, not_before, not_after, sha256, issued_at)
            VALUES (\(certificate.serial), \(certificate.deviceID?.rawValue), \(certificate.profile), \(certificate.owner),
                    \(RegistryEncoding.milliseconds(certificate.notBefore)), \(RegistryEncoding.milliseconds(certificate.notAfter)),
                    \(certificate.sha256), \(RegistryEncoding.milliseconds(certificate.issuedAt)))
            """,
            logger: logger
        )
    }

    /// One enrollment inside the caller's transaction.
    static func enrollOne(
        _ record: EnrollmentRecord, by actor: Actor, at time: Date, _ connection: PostgresConnection, _ logger: Logger
    ) async throws -> Device {
        if let tokenHMAC = record.tokenHMAC {
            let now = RegistryEncoding.milliseconds(time)
            let rows = try await connection.query(
                """
                UPDATE enrollment_tokens SET used_at = \(now)
                WHERE secret_hmac = \(ByteBuffer(bytes: tokenHMAC)) AND device_id = \(record.device.id.rawValue)
                  AND used_at IS NULL AND expires_at > \(now)
                RETURNING 1
                """,
                logger: logger
            )
            var spent = false
            for try await _ in rows { spent = true }
            guard spent else {
                throw RegistryError(.forbidden, "the enrollment token for device \(record.device.id) is not valid, used or expired")
            }
        }
        let stored = try await Self.readDevice(record.device.id, connection, logger)
        let (device, isNew) = try EnrollmentRules.apply(record, to: stored, at: time)
        let now = RegistryEncoding.milliseconds(time)
        if isNew {
            try await connection.query(
                """
                INSERT INTO devices (id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at)
                VALUES (\(device.id.rawValue), \(device.state.rawValue), \(device.owner), \(device.model),
                        \(RegistryEncoding.metadataJSON(device.metadata)), \(device.proof.kind), NULL,
                        \(RegistryEncoding.milliseconds(device.createdAt)), \(now))
                """,
                logger: logger
            )
        } else {
            try await connection.query(
                """
                UPDATE devices SET state = \(device.state.rawValue), owner = \(device.owner), updated_at = \(now)
                WHERE id = \(device.id.rawValue)
                """,
                logger: logger
            )
        }
        if let owner = device.owner { _ = try await Self.insertOwner(try Owner(id: owner, createdAt: time), connection, logger) }
        var certificate = record.certificate
        certificate.owner = device.owner
        certificate.deviceID = device.id
        try await Self.insertCertificateRow(certificate, connection, logger)
        try await Self.appendAudit(
            connection, logger, time: time, actor: actor, action: "device.enroll", subject: "device:\(device.id)",
            before: stored.map(RegistryEncoding.auditJSON), after: EnrollmentRules.auditJSON(record, device)
        )
        return device
    }

    public func certificate(serial: String) async throws -> CertificateRecord? {
        do {
            let rows = try await client.query(
                """
                SELECT c.serial, c.device_id, c.profile, c.owner, c.not_before, c.not_after, c.sha256, c.issued_at, r.reason, r.revoked_at
                FROM certificates c LEFT JOIN revocations r ON r.serial = c.serial WHERE c.serial = \(serial)
                """,
                logger: logger
            )
            for try await row in rows.decode((String, String?, String, String?, Int64, Int64, String, Int64, Int32?, Int64?).self) {
                return CertificateRecord(
                    serial: row.0, deviceID: row.1.flatMap { try? DeviceID($0) }, profile: row.2, owner: row.3,
                    notBefore: RegistryEncoding.date(row.4), notAfter: RegistryEncoding.date(row.5), sha256: row.6,
                    issuedAt: RegistryEncoding.date(row.7),
                    revocation: row.8.map { CertificateRecord.Revocation(reason: Int($0), time: RegistryEncoding.date(row.9 ?? 0)) }
                )
            }
            return nil
        } catch {
            throw Self.mapped(error)
        }
    }
}

// Single-certificate revocation.
extension PostgresRegistryStore {
    public func revokeCertificate(serial: String, reason: RevocationReason, by actor: Actor, at time: Date) async throws
        -> CertificateRecord
    {
        let logger = self.logger
        do {
            try await transaction(audited: true) { connection in
                let rows = try await connection.query("SELECT 1 FROM certificates WHERE serial = \(serial) FOR UPDATE", logger: logger)
                var exists = false
                for try await _ in rows { exists = true }
                guard exists else { throw RegistryError(.notFound, "no certificate \(serial)") }
                try await connection.query(
                    """
                    INSERT INTO revocations (serial, reason, revoked_at)
                    VALUES (\(serial), \(reason.rawValue), \(RegistryEncoding.milliseconds(time)))
                    """,
                    logger: logger
                )
                try await Self.appendAudit(
                    connection, logger, time: time, actor: actor, action: "certificate.revoke", subject: "certificate:\(serial)",
                    before: nil, after: "{\"reason\":\"\(reason)\"}")
            }
        } catch let error as RegistryError where error.code == .duplicate {
            throw RegistryError(.duplicate, "certificate \(serial) is already revoked")
        }
        guard let record = try await certificate(serial: serial) else { throw RegistryError(.notFound, "no certificate \(serial)") }
        return record
    }
}
