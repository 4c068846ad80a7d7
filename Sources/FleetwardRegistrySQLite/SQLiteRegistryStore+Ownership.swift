public import FleetwardPKI
public import FleetwardRegistry
public import Foundation

// Owners, transfers, claim codes, enrollment tokens, enrollment groups and token management.
extension SQLiteRegistryStore {
    // MARK: API tokens

    public func apiTokens() async throws -> [APITokenRecord] {
        try await withConnection { connection in
            let statement = try connection.statement(
                "SELECT id, secret_hmac, role, owner, created_at, expires_at FROM api_tokens WHERE revoked_at IS NULL ORDER BY id"
            )
            var tokens: [APITokenRecord] = []
            while try statement.step() {
                guard let id = statement.text(0), let role = statement.text(2).flatMap(Role.init(rawValue:)) else {
                    throw RegistryError(.storage, "an api token row is malformed")
                }
                tokens.append(
                    APITokenRecord(
                        id: id, secretHMAC: statement.blob(1) ?? [], role: role, owner: statement.text(3),
                        createdAt: RegistryEncoding.date(statement.int64(4)),
                        expiresAt: statement.isNull(5) ? nil : RegistryEncoding.date(statement.int64(5))
                    )
                )
            }
            return tokens
        }
    }

    public func revokeAPIToken(_ id: String, by actor: Actor, at time: Date) async throws {
        try await withConnection { connection in
            try connection.db.transaction {
                let statement = try connection.statement("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                statement.bind(1, RegistryEncoding.milliseconds(time))
                statement.bind(2, id)
                try statement.step()
                guard connection.db.changes == 1 else { throw RegistryError(.notFound, "no API token \(id)") }
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "token.revoke", subject: "token:\(id)", before: nil, after: nil
                )
            }
        }
    }

    // MARK: Owners

    public func insert(_ owner: Owner, by actor: Actor, at time: Date) async throws {
        try await withConnection { connection in
            try connection.db.transaction {
                guard try Self.insertOwner(owner, connection) else { throw RegistryError(.duplicate, "owner \(owner.id) exists") }
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "owner.create", subject: "owner:\(owner.id)", before: nil,
                    after: RegistryEncoding.ownerJSON(owner)
                )
            }
        }
    }

    /// Inserts an owner unless one with its ID exists; true when inserted.
    static func insertOwner(_ owner: Owner, _ connection: Connection) throws -> Bool {
        let statement = try connection.statement("INSERT OR IGNORE INTO owners (id, name, created_at) VALUES (?, ?, ?)")
        statement.bind(1, owner.id)
        statement.bind(2, owner.name)
        statement.bind(3, RegistryEncoding.milliseconds(owner.createdAt))
        try statement.step()
        return connection.db.changes == 1
    }

    public func owner(_ id: String) async throws -> Owner? {
        try await withConnection { connection in
            let statement = try connection.statement("SELECT id, name, created_at FROM owners WHERE id = ?")
            statement.bind(1, id)
            guard try statement.step() else { return nil }
            return try Self.decodeOwner(statement)
        }
    }

    public func owners(after cursor: String?, limit: Int) async throws -> [Owner] {
        try await withConnection { connection in
            let statement = try connection.statement(
                "SELECT id, name, created_at FROM owners WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2")
            statement.bind(1, cursor)
            statement.bind(2, Int64(max(0, min(limit, 10_000))))
            var owners: [Owner] = []
            while try statement.step() { owners.append(try Self.decodeOwner(statement)) }
            return owners
        }
    }

    private static func decodeOwner(_ statement: SQLiteStatement) throws -> Owner {
        guard let id = statement.text(0),
            let owner = try? Owner(id: id, name: statement.text(1), createdAt: RegistryEncoding.date(statement.int64(2)))
        else { throw RegistryError(.storage, "an owner row is malformed") }
        return owner
    }

    public func transfer(_ id: DeviceID, to newOwner: String, by actor: Actor, at time: Date) async throws -> Device {
        try await withConnection { connection in
            try connection.db.transaction {
                guard let device = try Self.readDevice(id, connection) else { throw RegistryError(.notFound, "no device \(id)") }
                try OwnershipRules.checkTransfer(of: device, to: newOwner, by: actor)
                let exists = try connection.statement("SELECT 1 FROM owners WHERE id = ?")
                exists.bind(1, newOwner)
                guard try exists.step() else { throw RegistryError(.notFound, "no owner \(newOwner)") }
                return try Self.changeOwner(of: device, to: newOwner, action: "device.transfer", by: actor, at: time, connection)
            }
        }
    }

    /// Sets the device's owner and records it, inside the caller's transaction.
    private static func changeOwner(
        of device: Device, to owner: String, action: String, by actor: Actor, at time: Date, _ connection: Connection
    ) throws -> Device {
        var changed = device
        changed.owner = owner
        changed.updatedAt = time
        try updateOwner(changed, connection)
        try appendAudit(
            connection, time: time, actor: actor, action: action, subject: "device:\(device.id)",
            before: RegistryEncoding.auditJSON(device), after: RegistryEncoding.auditJSON(changed))
        return changed
    }

    private static func updateOwner(_ device: Device, _ connection: Connection) throws {
        let update = try connection.statement("UPDATE devices SET owner = ?, updated_at = ? WHERE id = ?")
        update.bind(1, device.owner)
        update.bind(2, RegistryEncoding.milliseconds(device.updatedAt))
        update.bind(3, device.id.rawValue)
        try update.step()
    }

    // MARK: Claim codes

    public func setClaimCode(_ record: ClaimCodeRecord, by actor: Actor, at time: Date) async throws {
        try await withConnection { connection in
            try connection.db.transaction {
                guard let device = try Self.readDevice(record.deviceID, connection) else {
                    throw RegistryError(.notFound, "no device \(record.deviceID)")
                }
                guard device.owner == nil else {
                    throw RegistryError(.duplicate, "device \(device.id) is already claimed")
                }
                let statement = try connection.statement(
                    """
                    INSERT INTO claim_codes (device_id, salt, hash, iterations, claimed_by, claimed_at) VALUES (?, ?, ?, ?, NULL, NULL)
                    ON CONFLICT (device_id) DO UPDATE SET salt = excluded.salt, hash = excluded.hash,
                        iterations = excluded.iterations, claimed_by = NULL, claimed_at = NULL
                    """
                )
                statement.bind(1, record.deviceID.rawValue)
                statement.bind(2, record.salt)
                statement.bind(3, record.hash)
                statement.bind(4, Int64(record.iterations))
                try statement.step()
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "device.claim-code", subject: "device:\(device.id)", before: nil,
                    after: nil
                )
            }
        }
    }

    public func claimCode(for id: DeviceID) async throws -> ClaimCodeRecord? {
        try await withReader { connection in
            let statement = try connection.statement(
                "SELECT salt, hash, iterations, claimed_by, claimed_at FROM claim_codes WHERE device_id = ?")
            statement.bind(1, id.rawValue)
            guard try statement.step() else { return nil }
            return ClaimCodeRecord(
                deviceID: id, salt: statement.blob(0) ?? [], hash: statement.blob(1) ?? [], iterations: Int(statement.int64(2)),
                claimedBy: statement.text(3), claimedAt: statement.isNull(4) ? nil : RegistryEncoding.date(statement.int64(4))
            )
        }
    }

    public func claim(_ id: DeviceID, verifiedHash: [UInt8], by actor: Actor, at time: Date) async throws -> Device {
        try await withConnection { connection in
            try connection.db.transaction {
                guard let device = try Self.readDevice(id, connection) else { throw RegistryError(.notFound, "no device \(id)") }
                let owner = try OwnershipRules.checkClaim(of: device, by: actor)
                let use = try connection.statement(
                    "UPDATE claim_codes SET claimed_by = ?, claimed_at = ? WHERE device_id = ? AND hash = ? AND claimed_by IS NULL")
                use.bind(1, owner)
                use.bind(2, RegistryEncoding.milliseconds(time))
                use.bind(3, id.rawValue)
                use.bind(4, verifiedHash)
                try use.step()
                guard connection.db.changes == 1 else {
                    throw RegistryError(.forbidden, "the claim code of device \(id) is not valid")
                }
                _ = try Self.insertOwner(try Owner(id: owner, createdAt: time), connection)
                return try Self.changeOwner(of: device, to: owner, action: "device.claim", by: actor, at: time, connection)
            }
        }
    }

    // MARK: Enrollment tokens

    public func insert(_ token: EnrollmentTokenRecord, by actor: Actor, at time: Date) async throws {
        try await withConnection { connection in
            try connection.db.transaction {
                guard try Self.readDevice(token.deviceID, connection) != nil else {
                    throw RegistryError(.notFound, "no device \(token.deviceID)")
                }
                let statement = try connection.statement(
                    "INSERT INTO enrollment_tokens (secret_hmac, device_id, owner, expires_at, used_at) VALUES (?, ?, ?, ?, NULL)")
                statement.bind(1, token.secretHMAC)
                statement.bind(2, token.deviceID.rawValue)
                statement.bind(3, token.owner)
                statement.bind(4, RegistryEncoding.milliseconds(token.expiresAt))
                try statement.step()
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "device.enrollment-token", subject: "device:\(token.deviceID)",
                    before: nil, after: RegistryEncoding.enrollmentTokenJSON(token)
                )
            }
        }
    }

    public func enrollmentToken(secretHMAC: [UInt8], for id: DeviceID, at time: Date) async throws -> EnrollmentTokenRecord? {
        try await withReader { connection in
            let read = try connection.statement(
                "SELECT owner, expires_at FROM enrollment_tokens WHERE secret_hmac = ?1 AND device_id = ?2 AND used_at IS NULL AND expires_at > ?3"
            )
            read.bind(1, secretHMAC)
            read.bind(2, id.rawValue)
            read.bind(3, RegistryEncoding.milliseconds(time))
            guard try read.step() else { return nil }
            return EnrollmentTokenRecord(
                secretHMAC: secretHMAC, deviceID: id, owner: read.text(0), expiresAt: RegistryEncoding.date(read.int64(1)))
        }
    }

    public func redeemEnrollmentToken(secretHMAC: [UInt8], for id: DeviceID, at time: Date) async throws -> EnrollmentTokenRecord {
        try await withConnection { connection in
            try connection.db.transaction {
                let now = RegistryEncoding.milliseconds(time)
                let use = try connection.statement(
                    """
                    UPDATE enrollment_tokens SET used_at = ?1
                    WHERE secret_hmac = ?2 AND device_id = ?3 AND used_at IS NULL AND expires_at > ?1
                    RETURNING owner, expires_at
                    """
                )
                use.bind(1, now)
                use.bind(2, secretHMAC)
                use.bind(3, id.rawValue)
                guard try use.step() else {
                    throw RegistryError(.forbidden, "the enrollment token for device \(id) is not valid, used or expired")
                }
                let record = EnrollmentTokenRecord(
                    secretHMAC: secretHMAC, deviceID: id, owner: use.text(0), expiresAt: RegistryEncoding.date(use.int64(1)),
                    usedAt: time
                )
                use.reset()
                try Self.appendAudit(
                    connection, time: time, actor: Actor(role: .owner, name: "device:\(id)", owner: record.owner),
                    action: "enrollment-token.redeem", subject: "device:\(id)", before: nil, after: nil
                )
                return record
            }
        }
    }

    // MARK: Enrollment groups

    private static let groupColumns = "id, name, ca_certificate, ca_sha256, auto_approve, created_at"

    public func insert(_ group: EnrollmentGroup, by actor: Actor, at time: Date) async throws {
        try await withConnection { connection in
            try connection.db.transaction {
                let statement = try connection.statement("INSERT INTO enrollment_groups (\(Self.groupColumns)) VALUES (?, ?, ?, ?, ?, ?)")
                statement.bind(1, group.id)
                statement.bind(2, group.name)
                statement.bind(3, group.caCertificateDER)
                statement.bind(4, group.caSHA256)
                statement.bind(5, Int64(group.autoApprove ? 1 : 0))
                statement.bind(6, RegistryEncoding.milliseconds(group.createdAt))
                do {
                    try statement.step()
                } catch let error as RegistryError where error.code == .duplicate {
                    throw RegistryError(.duplicate, "an enrollment group with this name or CA exists")
                }
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "group.create", subject: "group:\(group.id)", before: nil,
                    after: RegistryEncoding.groupJSON(group)
                )
            }
        }
    }

    public func enrollmentGroup(_ id: String) async throws -> EnrollmentGroup? {
        try await withConnection { connection in
            let statement = try connection.statement("SELECT \(Self.groupColumns) FROM enrollment_groups WHERE id = ?")
            statement.bind(1, id)
            guard try statement.step() else { return nil }
            return try Self.decodeGroup(statement)
        }
    }

    public func enrollmentGroups() async throws -> [EnrollmentGroup] {
        try await withReader { connection in
            let statement = try connection.statement("SELECT \(Self.groupColumns) FROM enrollment_groups ORDER BY name")
            var groups: [EnrollmentGroup] = []
            while try statement.step() { groups.append(try Self.decodeGroup(statement)) }
            return groups
        }
    }

    public func deleteEnrollmentGroup(_ id: String, by actor: Actor, at time: Date) async throws {
        try await withConnection { connection in
            try connection.db.transaction {
                let read = try connection.statement("SELECT \(Self.groupColumns) FROM enrollment_groups WHERE id = ?")
                read.bind(1, id)
                guard try read.step() else { throw RegistryError(.notFound, "no enrollment group \(id)") }
                let group = try Self.decodeGroup(read)
                read.reset()
                let delete = try connection.statement("DELETE FROM enrollment_groups WHERE id = ?")
                delete.bind(1, id)
                try delete.step()
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "group.delete", subject: "group:\(id)",
                    before: RegistryEncoding.groupJSON(group), after: nil
                )
            }
        }
    }

    private static func decodeGroup(_ statement: SQLiteStatement) throws -> EnrollmentGroup {
        guard let id = statement.text(0), let name = statement.text(1), let der = statement.blob(2), let sha = statement.text(3) else {
            throw RegistryError(.storage, "an enrollment group row is malformed")
        }
        return EnrollmentGroup(
            id: id, name: name, caCertificateDER: der, caSHA256: sha, autoApprove: statement.int64(4) == 1,
            createdAt: RegistryEncoding.date(statement.int64(5))
        )
    }
}

// Certificates issued.
extension SQLiteRegistryStore {
    public func insert(_ certificate: CertificateRecord, by actor: Actor, at time: Date) async throws {
        try await insert([certificate], by: actor, at: time)
    }

    public func insert(_ certificates: [CertificateRecord], by actor: Actor, at time: Date) async throws {
        try await withConnection { connection in
            try connection.db.transaction {
                for certificate in certificates {
                    if let id = certificate.deviceID, try Self.readDevice(id, connection) == nil {
                        throw RegistryError(.notFound, "no device \(id)")
                    }
                    do {
                        try Self.insertCertificateRow(certificate, connection)
                    } catch let error as RegistryError where error.code == .duplicate {
                        throw RegistryError(.duplicate, "certificate \(certificate.serial) is already recorded")
                    }
                    try Self.appendAudit(
                        connection, time: time, actor: actor, action: "certificate.issue", subject: "certificate:\(certificate.serial)",
                        before: nil, after: RegistryEncoding.certificateJSON(certificate)
                    )
                }
            }
        }
    }

    public func certificates(for id: DeviceID) async throws -> [CertificateRecord] {
        try await withConnection { connection in
            let statement = try connection.statement(
                """
                SELECT c.serial, c.profile, c.owner, c.not_before, c.not_after, c.sha256, c.issued_at, r.reason, r.revoked_at
                FROM certificates c LEFT JOIN revocations r ON r.serial = c.serial
                WHERE c.device_id = ? ORDER BY c.issued_at DESC, c.serial
                """
            )
            statement.bind(1, id.rawValue)
            var records: [CertificateRecord] = []
            while try statement.step() {
                guard let serial = statement.text(0), let profile = statement.text(1), let sha = statement.text(5) else {
                    throw RegistryError(.storage, "a certificate row is malformed")
                }
                records.append(
                    CertificateRecord(
                        serial: serial, deviceID: id, profile: profile, owner: statement.text(2),
                        notBefore: RegistryEncoding.date(statement.int64(3)), notAfter: RegistryEncoding.date(statement.int64(4)),
                        sha256: sha, issuedAt: RegistryEncoding.date(statement.int64(6)),
                        revocation: statement.isNull(7)
                            ? nil
                            : CertificateRecord.Revocation(reason: Int(statement.int64(7)), time: RegistryEncoding.date(statement.int64(8)))
                    )
                )
            }
            return records
        }
    }
}

// Enrollment.
extension SQLiteRegistryStore {
    public func enroll(_ record: EnrollmentRecord, by actor: Actor, at time: Date) async throws -> Device {
        try await withConnection { connection in
            try connection.db.transaction {
                var tail: AuditTail?
                return try Self.enrollOne(record, by: actor, at: time, connection, tail: &tail)
            }
        }
    }

    public func enroll(batch: [(record: EnrollmentRecord, actor: Actor)], at time: Date) async throws -> [Result<Device, RegistryError>] {
        try await withConnection { connection in
            try connection.db.transaction {
                var results: [Result<Device, RegistryError>] = []
                results.reserveCapacity(batch.count)
                // The audit log's last entry, once this transaction has appended one: the next row
                // chains to it without reading it back (the transaction holds the write lock).
                var tail: AuditTail?
                // Prepared once and cached, like every statement here: parsing them per row costs.
                for (record, actor) in batch {
                    try connection.statement("SAVEPOINT enrollment").step()
                    var rowTail = tail
                    do {
                        results.append(.success(try Self.enrollOne(record, by: actor, at: time, connection, tail: &rowTail)))
                        try connection.statement("RELEASE enrollment").step()
                        tail = rowTail
                    } catch let error as RegistryError where error.code != .storage {
                        try connection.statement("ROLLBACK TO enrollment").step()
                        try connection.statement("RELEASE enrollment").step()
                        results.append(.failure(error))
                    }
                }
                return results
            }
        }
    }

    /// Inserts one certificate row inside the caller's transaction.
    static func insertCertificateRow(_ certificate: CertificateRecord, _ connection: Connection) throws {
        let statement = try connection.statement(
            "INSERT INTO certificates (serial, device_id, profile, owner, not_before, not_after, sha256, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        statement.bind(1, certificate.serial)
        statement.bind(2, certificate.deviceID?.rawValue)
        statement.bind(3, certificate.profile)
        statement.bind(4, certificate.owner)
        statement.bind(5, RegistryEncoding.milliseconds(certificate.notBefore))
        statement.bind(6, RegistryEncoding.milliseconds(certificate.notAfter))
        statement.bind(7, certificate.sha256)
        statement.bind(8, RegistryEncoding.milliseconds(certificate.issuedAt))
        try statement.step()
    }

    /// One enrollment inside the caller's transaction.
    static func enrollOne(
        _ record: EnrollmentRecord, by actor: Actor, at time: Date, _ connection: Connection, tail: inout AuditTail?
    ) throws -> Device {
        if let tokenHMAC = record.tokenHMAC {
            let spend = try connection.statement(
                "UPDATE enrollment_tokens SET used_at = ?1 WHERE secret_hmac = ?2 AND device_id = ?3 AND used_at IS NULL AND expires_at > ?1"
            )
            spend.bind(1, RegistryEncoding.milliseconds(time))
            spend.bind(2, tokenHMAC)
            spend.bind(3, record.device.id.rawValue)
            try spend.step()
            guard connection.db.changes == 1 else {
                throw RegistryError(.forbidden, "the enrollment token for device \(record.device.id) is not valid, used or expired")
            }
        }
        let stored = try Self.readDevice(record.device.id, connection)
        let (device, isNew) = try EnrollmentRules.apply(record, to: stored, at: time)
        if isNew {
            let insert = try Self.insertStatement(connection, orIgnore: false)
            Self.bind(device, to: insert)
            try insert.step()
        } else {
            let update = try connection.statement("UPDATE devices SET state = ?, owner = ?, updated_at = ? WHERE id = ?")
            update.bind(1, device.state.rawValue)
            update.bind(2, device.owner)
            update.bind(3, RegistryEncoding.milliseconds(time))
            update.bind(4, device.id.rawValue)
            try update.step()
        }
        if let owner = device.owner { _ = try Self.insertOwner(try Owner(id: owner, createdAt: time), connection) }
        var certificate = record.certificate
        certificate.owner = device.owner
        certificate.deviceID = device.id
        try Self.insertCertificateRow(certificate, connection)
        try Self.appendAudit(
            connection, time: time, actor: actor, action: "device.enroll", subject: "device:\(device.id)",
            before: stored.map(RegistryEncoding.auditJSON), after: EnrollmentRules.auditJSON(record, device), tail: &tail
        )
        return device
    }

    public func revokedCertificates(profiles: [String]) async throws -> [RevokedEntry] {
        try await withReader { connection in
            let placeholders = Array(repeating: "?", count: max(1, profiles.count)).joined(separator: ", ")
            let statement = try connection.statement(
                """
                SELECT r.serial, r.reason, r.revoked_at FROM revocations r JOIN certificates c ON c.serial = r.serial
                WHERE c.profile IN (\(placeholders)) ORDER BY r.serial
                """
            )
            for (index, profile) in profiles.enumerated() { statement.bind(Int32(index + 1), profile) }
            if profiles.isEmpty { statement.bind(1, "") }
            var entries: [RevokedEntry] = []
            while try statement.step() {
                entries.append(
                    RevokedEntry(
                        serialHex: statement.text(0) ?? "", revocationDate: RegistryEncoding.date(statement.int64(2)),
                        reasonCode: Int(statement.int64(1))))
            }
            return entries
        }
    }

    public func insertTelemetry(_ body: String, from device: DeviceID, nonce: String, at time: Date) async throws {
        try await withConnection { connection in
            let insert = try connection.statement("INSERT INTO telemetry (device_id, received_at, body, nonce) VALUES (?, ?, ?, ?)")
            insert.bind(1, device.rawValue)
            insert.bind(2, RegistryEncoding.milliseconds(time))
            insert.bind(3, body)
            insert.bind(4, nonce)
            do {
                try insert.step()
            } catch let error as RegistryError where error.code == .invalidInput {
                throw RegistryError(.notFound, "no device \(device)")
            }
        }
    }

    public func telemetry(for device: DeviceID, limit: Int) async throws -> [TelemetryRecord] {
        try await withReader { connection in
            let statement = try connection.statement(
                "SELECT sequence, received_at, body FROM telemetry WHERE device_id = ? ORDER BY sequence DESC LIMIT ?")
            statement.bind(1, device.rawValue)
            statement.bind(2, Int64(limit))
            var records: [TelemetryRecord] = []
            while try statement.step() {
                records.append(
                    TelemetryRecord(
                        sequence: statement.int64(0), device: device.rawValue, receivedAt: RegistryEncoding.date(statement.int64(1)),
                        body: statement.text(2) ?? ""))
            }
            return records
        }
    }

    public func recordUpdate(_ report: UpdateReport, at time: Date) async throws {
        try await withConnection { connection in
            let insert = try connection.statement(
                "INSERT INTO update_status (device_id, version, state, detail, updated_at) VALUES (?, ?, ?, ?, ?) "
                    + UpdateReport.upsertConflictClause)
            insert.bind(1, report.device.rawValue)
            insert.bind(2, report.version)
            insert.bind(3, report.state.rawValue)
            insert.bind(4, report.detail)
            insert.bind(5, RegistryEncoding.milliseconds(time))
            do {
                try insert.step()
            } catch let error as RegistryError where error.code == .invalidInput {
                throw RegistryError(.notFound, "no device \(report.device)")
            }
        }
    }

    public func updateCounts(version: String) async throws -> [UpdateState: Int] {
        try await withReader { connection in
            let statement = try connection.statement("SELECT state, count(*) FROM update_status WHERE version = ? GROUP BY state")
            statement.bind(1, version)
            var counts: [UpdateState: Int] = [:]
            while try statement.step() {
                if let state = statement.text(0).flatMap(UpdateState.init(rawValue:)) { counts[state] = Int(statement.int64(1)) }
            }
            return counts
        }
    }

    public func revocationCount() async throws -> Int {
        try await withReader { connection in
            let statement = try connection.statement("SELECT count(*) FROM revocations")
            return try statement.step() ? Int(statement.int64(0)) : 0
        }
    }

    public func certificate(serial: String) async throws -> CertificateRecord? {
        try await withReader { connection in
            let statement = try connection.statement(
                """
                SELECT c.serial, c.device_id, c.profile, c.owner, c.not_before, c.not_after, c.sha256, c.issued_at, r.reason, r.revoked_at
                FROM certificates c LEFT JOIN revocations r ON r.serial = c.serial WHERE c.serial = ?
                """
            )
            statement.bind(1, serial)
            guard try statement.step(), let serial = statement.text(0), let profile = statement.text(2), let sha = statement.text(6) else {
                return nil
            }
            return CertificateRecord(
                serial: serial, deviceID: statement.text(1).flatMap { try? DeviceID($0) }, profile: profile, owner: statement.text(3),
                notBefore: RegistryEncoding.date(statement.int64(4)), notAfter: RegistryEncoding.date(statement.int64(5)), sha256: sha,
                issuedAt: RegistryEncoding.date(statement.int64(7)),
                revocation: statement.isNull(8)
                    ? nil : CertificateRecord.Revocation(reason: Int(statement.int64(8)), time: RegistryEncoding.date(statement.int64(9)))
            )
        }
    }
}

// Single-certificate revocation.
extension SQLiteRegistryStore {
    public func revokeCertificate(serial: String, reason: RevocationReason, by actor: Actor, at time: Date) async throws
        -> CertificateRecord
    {
        let found = try await withConnection { connection in
            try connection.db.transaction { () -> Bool in
                let exists = try connection.statement("SELECT 1 FROM certificates WHERE serial = ?")
                exists.bind(1, serial)
                guard try exists.step() else { return false }
                let revoke = try connection.statement("INSERT INTO revocations (serial, reason, revoked_at) VALUES (?, ?, ?)")
                revoke.bind(1, serial)
                revoke.bind(2, Int64(reason.rawValue))
                revoke.bind(3, RegistryEncoding.milliseconds(time))
                do {
                    try revoke.step()
                } catch let error as RegistryError where error.code == .duplicate {
                    throw RegistryError(.duplicate, "certificate \(serial) is already revoked")
                }
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "certificate.revoke", subject: "certificate:\(serial)", before: nil,
                    after: "{\"reason\":\"\(reason)\"}")
                return true
            }
        }
        guard found, let record = try await certificate(serial: serial) else { throw RegistryError(.notFound, "no certificate \(serial)") }
        return record
    }
}
