import FleetwardPKI
import FleetwardRegistry
import Foundation

/// Row reads and their decoding, shared by the store's reads and its transactions.
enum Rows {
    typealias Connection = SQLiteRegistryStore.Connection

    static let deviceColumns = "id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at, stolen_from, group_id, registered_by"
    /// Built once: the statement cache is keyed by the SQL text.
    static let selectDevice = "SELECT \(deviceColumns) FROM devices WHERE id = ?"
    static let tokenColumns = "id, secret_hmac, role, owner, created_at, expires_at"
    static let groupColumns = "id, name, ca_certificate, ca_sha256, auto_approve, created_at, id_pattern"
    static let certificateColumns = """
        c.serial, c.device_id, c.profile, c.owner, c.not_before, c.not_after, c.sha256, c.issued_at, r.reason, r.revoked_at
        FROM certificates c LEFT JOIN revocations r ON r.serial = c.serial
        """

    static func device(_ id: DeviceID, _ connection: Connection) throws -> Device? {
        let statement = try connection.statement(selectDevice)
        statement.bind(1, id.rawValue)
        guard try statement.step() else { return nil }
        return try decodeDevice(statement)
    }

    static func decodeDevice(_ statement: SQLiteStatement) throws -> Device {
        guard let idText = statement.text(0), let id = try? DeviceID(idText),
            let state = statement.text(1).flatMap(DeviceState.init(rawValue:)), let model = statement.text(3)
        else {
            throw RegistryError(.storage, "a device row is malformed")
        }
        let proof: EnrollmentProof
        switch statement.text(5) {
        case "secret": proof = .secret(hmac: statement.blob(6) ?? [])
        case "public-key": proof = .publicKey(sha256: statement.blob(6) ?? [])
        default: proof = .none
        }
        return Device(
            id: id, state: state, owner: statement.text(2), model: model,
            metadata: RegistryEncoding.metadata(fromJSON: statement.text(4) ?? "{}"), proof: proof,
            createdAt: RegistryEncoding.date(statement.int64(7)), updatedAt: RegistryEncoding.date(statement.int64(8)),
            stateBeforeTheft: statement.text(9).flatMap(DeviceState.init(rawValue:)), group: statement.text(10),
            registeredBy: statement.text(11)
        )
    }

    /// Binds every column of ``deviceColumns``, in order, from 1.
    static func bind(_ device: Device, to statement: SQLiteStatement) {
        statement.bind(1, device.id.rawValue)
        statement.bind(2, device.state.rawValue)
        statement.bind(3, device.owner)
        statement.bind(4, device.model)
        statement.bind(5, RegistryEncoding.metadataJSON(device.metadata))
        statement.bind(6, device.proof.kind)
        switch device.proof {
        case .secret(let hmac): statement.bind(7, hmac)
        case .publicKey(let sha256): statement.bind(7, sha256)
        case .none: statement.bind(7, nil as [UInt8]?)
        }
        statement.bind(8, RegistryEncoding.milliseconds(device.createdAt))
        statement.bind(9, RegistryEncoding.milliseconds(device.updatedAt))
        statement.bind(10, device.stateBeforeTheft?.rawValue)
        statement.bind(11, device.group)
        statement.bind(12, device.registeredBy)
    }

    static func certificate(serial: String, _ connection: Connection) throws -> CertificateRecord? {
        let statement = try connection.statement("SELECT \(certificateColumns) WHERE c.serial = ?")
        statement.bind(1, serial)
        return try statement.step() ? try decodeCertificate(statement) : nil
    }

    static func certificates(for id: DeviceID, _ connection: Connection) throws -> [CertificateRecord] {
        let statement = try connection.statement("SELECT \(certificateColumns) WHERE c.device_id = ? ORDER BY c.issued_at DESC, c.serial")
        statement.bind(1, id.rawValue)
        var records: [CertificateRecord] = []
        while try statement.step() { records.append(try decodeCertificate(statement)) }
        return records
    }

    static func decodeCertificate(_ statement: SQLiteStatement) throws -> CertificateRecord {
        guard let serial = statement.text(0), let profile = statement.text(2), let sha = statement.text(6) else {
            throw RegistryError(.storage, "a certificate row is malformed")
        }
        return CertificateRecord(
            serial: serial, deviceID: statement.text(1).flatMap { try? DeviceID($0) }, profile: profile, owner: statement.text(3),
            notBefore: RegistryEncoding.date(statement.int64(4)), notAfter: RegistryEncoding.date(statement.int64(5)), sha256: sha,
            issuedAt: RegistryEncoding.date(statement.int64(7)),
            revocation: statement.isNull(8)
                ? nil : CertificateRecord.Revocation(reason: Int(statement.int64(8)), time: RegistryEncoding.date(statement.int64(9)))
        )
    }

    static func decodeToken(_ statement: SQLiteStatement) throws -> APITokenRecord {
        guard let id = statement.text(0), let hmac = statement.blob(1), let role = statement.text(2).flatMap(Role.init(rawValue:)) else {
            throw RegistryError(.storage, "an api token row is malformed")
        }
        return APITokenRecord(
            id: id, secretHMAC: hmac, role: role, owner: statement.text(3), createdAt: RegistryEncoding.date(statement.int64(4)),
            expiresAt: statement.isNull(5) ? nil : RegistryEncoding.date(statement.int64(5)))
    }

    static func owner(_ id: String, _ connection: Connection) throws -> Owner? {
        let statement = try connection.statement("SELECT id, name, created_at FROM owners WHERE id = ?")
        statement.bind(1, id)
        return try statement.step() ? try decodeOwner(statement) : nil
    }

    static func decodeOwner(_ statement: SQLiteStatement) throws -> Owner {
        guard let id = statement.text(0),
            let owner = try? Owner(id: id, name: statement.text(1), createdAt: RegistryEncoding.date(statement.int64(2)))
        else { throw RegistryError(.storage, "an owner row is malformed") }
        return owner
    }

    static func claimCode(for id: DeviceID, _ connection: Connection) throws -> ClaimCodeRecord? {
        let statement = try connection.statement("SELECT salt, hash, iterations, claimed_by, claimed_at FROM claim_codes WHERE device_id = ?")
        statement.bind(1, id.rawValue)
        guard try statement.step() else { return nil }
        return ClaimCodeRecord(
            deviceID: id, salt: statement.blob(0) ?? [], hash: statement.blob(1) ?? [], iterations: Int(statement.int64(2)),
            claimedBy: statement.text(3), claimedAt: statement.isNull(4) ? nil : RegistryEncoding.date(statement.int64(4)))
    }

    static func enrollmentToken(secretHMAC: [UInt8], _ connection: Connection) throws -> EnrollmentTokenRecord? {
        let statement = try connection.statement("SELECT device_id, owner, expires_at, used_at FROM enrollment_tokens WHERE secret_hmac = ?")
        statement.bind(1, secretHMAC)
        guard try statement.step() else { return nil }
        guard let id = statement.text(0).flatMap({ try? DeviceID($0) }) else {
            throw RegistryError(.storage, "an enrollment token row is malformed")
        }
        return EnrollmentTokenRecord(
            secretHMAC: secretHMAC, deviceID: id, owner: statement.text(1), expiresAt: RegistryEncoding.date(statement.int64(2)),
            usedAt: statement.isNull(3) ? nil : RegistryEncoding.date(statement.int64(3)))
    }

    static func mqttPolicy(_ scope: MQTTPolicyScope, _ connection: Connection) throws -> MQTTPolicyRecord? {
        let statement = try connection.statement("SELECT scope, document, updated_at FROM mqtt_policies WHERE scope = ?")
        statement.bind(1, scope.description)
        return try statement.step() ? try decodeMQTTPolicy(statement) : nil
    }

    static func decodeMQTTPolicy(_ statement: SQLiteStatement) throws -> MQTTPolicyRecord {
        guard let scope = try? MQTTPolicyScope(parsing: statement.text(0) ?? ""), let document = statement.text(1) else {
            throw RegistryError(.storage, "an MQTT policy row is malformed")
        }
        return MQTTPolicyRecord(scope: scope, document: document, updatedAt: RegistryEncoding.date(statement.int64(2)))
    }

    static func enrollmentGroup(_ id: String, _ connection: Connection) throws -> EnrollmentGroup? {
        let statement = try connection.statement("SELECT \(groupColumns) FROM enrollment_groups WHERE id = ?")
        statement.bind(1, id)
        return try statement.step() ? try decodeGroup(statement) : nil
    }

    static func decodeGroup(_ statement: SQLiteStatement) throws -> EnrollmentGroup {
        guard let id = statement.text(0), let name = statement.text(1), let der = statement.blob(2), let sha = statement.text(3) else {
            throw RegistryError(.storage, "an enrollment group row is malformed")
        }
        return EnrollmentGroup(
            id: id, name: name, caCertificateDER: der, caSHA256: sha, autoApprove: statement.int64(4) == 1,
            createdAt: RegistryEncoding.date(statement.int64(5)), idPattern: statement.text(6))
    }
}
