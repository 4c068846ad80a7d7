public import Foundation
import SwiftASN1

/// One revoked certificate on a CRL.
public struct RevokedEntry: Sendable, Equatable {
    /// The certificate's serial number, hexadecimal (any case, with or without leading zeros).
    public var serialHex: String
    /// When it was revoked.
    public var revocationDate: Date
    /// The RFC 5280 §5.3.1 CRLReason code; 0 (unspecified) is left out of the entry, as the RFC asks.
    public var reasonCode: Int

    public init(serialHex: String, revocationDate: Date, reasonCode: Int) {
        self.serialHex = serialHex
        self.revocationDate = revocationDate
        self.reasonCode = reasonCode
    }
}

/// X.509 v2 certificate revocation lists (RFC 5280 §5), signed by the CA that issued the
/// certificates they list, written by hand like the certificates themselves.
///
/// ```
/// CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue BIT STRING }
/// TBSCertList ::= SEQUENCE { version v2, signature, issuer, thisUpdate, nextUpdate,
///     revokedCertificates SEQUENCE OF SEQUENCE { userCertificate, revocationDate,
///                                                crlEntryExtensions (reasonCode) } OPTIONAL,
///     crlExtensions [0] EXPLICIT { authorityKeyIdentifier, cRLNumber } }
/// ```
extension CertificateIssuer {
    /// The DER CRL of this CA listing `entries`, numbered `number` (cRLNumber, which must grow
    /// with every CRL this CA publishes), valid from `thisUpdate` until `nextUpdate`.
    ///
    /// - Throws: ``PKIError`` with `invalidRequest` for a serial that is not hexadecimal or a
    ///   reason code outside RFC 5280's (0–10 except 7), or `nextUpdate` not after `thisUpdate`.
    public func revocationList(entries: [RevokedEntry], number: UInt64, thisUpdate: Date, nextUpdate: Date) throws -> [UInt8] {
        guard nextUpdate > thisUpdate else {
            throw PKIError(.invalidRequest, "a CRL's nextUpdate must come after its thisUpdate")
        }
        var revoked: [UInt8] = []
        revoked.reserveCapacity(entries.count * 48)
        for entry in entries {
            guard let serial = Self.serialContent(entry.serialHex) else {
                throw PKIError(.invalidRequest, "serial \(entry.serialHex) is not a hexadecimal certificate serial")
            }
            guard (0...10).contains(entry.reasonCode), entry.reasonCode != 7 else {
                throw PKIError(.invalidRequest, "\(entry.reasonCode) is not an RFC 5280 CRLReason code")
            }
            var fields = DERBytes.tlv(0x02, serial) + ASN1Time.der(entry.revocationDate)
            if entry.reasonCode != 0 {
                // reasonCode (2.5.29.21): CRLReason ::= ENUMERATED
                let reason = DERBytes.extensionDER(
                    oid: [0x06, 0x03, 0x55, 0x1D, 0x15], critical: false, value: [0x0A, 0x01, UInt8(entry.reasonCode)])
                fields += DERBytes.tlv(0x30, reason)
            }
            revoked += DERBytes.tlv(0x30, fields)
        }
        // cRLNumber (2.5.29.20): INTEGER (0..MAX)
        let crlNumber = DERBytes.extensionDER(
            oid: [0x06, 0x03, 0x55, 0x1D, 0x14], critical: false, value: DERBytes.tlv(0x02, Self.unsignedContent(number)))
        var body: [UInt8] = [0x02, 0x01, 0x01]  // version v2
        body += key.signatureAlgorithmDER
        body += issuerNameDER
        body += ASN1Time.der(thisUpdate)
        body += ASN1Time.der(nextUpdate)
        if !entries.isEmpty { body += DERBytes.tlv(0x30, revoked) }
        body += DERBytes.tlv(0xA0, DERBytes.tlv(0x30, authorityKeyIdentifierDER + crlNumber))
        let tbs = DERBytes.tlv(0x30, body)
        let signature = try key.signDER(tbs)
        return DERBytes.tlv(0x30, tbs + key.signatureAlgorithmDER + DERBytes.tlv(0x03, [0x00] + signature))
    }

    /// The INTEGER content octets of a positive serial given in hex: leading zeros dropped, a
    /// 0x00 added when the top bit is set.
    static func serialContent(_ hex: String) -> [UInt8]? {
        guard !hex.isEmpty, hex.utf8.count <= 42, let bytes = Hex.bytes(Array((hex.utf8.count % 2 == 1 ? "0" + hex : hex).utf8))
        else { return nil }
        let content = integerContent(bytes)
        return content.count <= 21 ? content : nil
    }

    static func unsignedContent(_ value: UInt64) -> [UInt8] {
        integerContent(withUnsafeBytes(of: value.bigEndian, Array.init))
    }

    /// Minimal DER INTEGER content of the unsigned big-endian `bytes`.
    private static func integerContent(_ bytes: [UInt8]) -> [UInt8] {
        var bytes = bytes
        while bytes.count > 1, bytes[0] == 0, bytes[1] & 0x80 == 0 { bytes.removeFirst() }
        if bytes[0] & 0x80 != 0 { bytes.insert(0, at: 0) }
        return bytes
    }
}

/// Reading a CRL as a relying party would: which serials it lists.
public enum CRLReader {
    /// When a DER CRL says the next one comes (its nextUpdate).
    /// - Throws: ``PKIError`` `malformedInput` when it is not a CRL or has no nextUpdate.
    public static func nextUpdate(_ der: [UInt8]) throws -> Date {
        do {
            let root = try DER.parse(der)
            guard case .constructed(let list) = root.content, let tbs = list.first(where: { _ in true }),
                case .constructed(let fields) = tbs.content
            else { throw PKIError(.malformedInput, "the data is not a CRL") }
            // version, signature, issuer, thisUpdate, nextUpdate
            let times = fields.dropFirst(3).prefix(2).compactMap { node -> Date? in
                if let time = try? UTCTime(derEncoded: node) { return date(time.year, time.month, time.day, time.hours, time.minutes, time.seconds) }
                if let time = try? GeneralizedTime(derEncoded: node) {
                    return date(time.year, time.month, time.day, time.hours, time.minutes, time.seconds)
                }
                return nil
            }
            guard times.count == 2 else { throw PKIError(.malformedInput, "the CRL has no nextUpdate") }
            return times[1]
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError(.malformedInput, "the data is not a CRL", underlying: error)
        }
    }

    private static func date(_ year: Int, _ month: Int, _ day: Int, _ hours: Int, _ minutes: Int, _ seconds: Int) -> Date {
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hours)
        parts.tm_min = Int32(minutes)
        parts.tm_sec = Int32(seconds)
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }

    /// The serials (lower-case hex, no leading zero octets) a DER CRL lists. The signature is not
    /// checked here (`openssl crl -CAfile` does that).
    /// - Throws: ``PKIError`` `malformedInput` when it is not a CRL.
    public static func revokedSerials(_ der: [UInt8]) throws -> [String] {
        do {
            let root = try DER.parse(der)
            guard case .constructed(let list) = root.content, let tbs = list.first(where: { _ in true }),
                case .constructed(let fields) = tbs.content
            else { throw PKIError(.malformedInput, "the data is not a CRL") }
            // The only SEQUENCE OF SEQUENCE after the issuer and times is revokedCertificates;
            // the others (signature algorithm, issuer Name) hold an OID or SETs first.
            for field in fields.dropFirst(3) where field.identifier == .sequence {
                guard case .constructed(let entries) = field.content else { continue }
                var serials: [String] = []
                for entry in entries {
                    guard case .constructed(let parts) = entry.content, let serial = parts.first(where: { _ in true }),
                        serial.identifier == .integer, case .primitive(let bytes) = serial.content
                    else { throw PKIError(.malformedInput, "a CRL entry is not SEQUENCE { INTEGER, … }") }
                    var octets = Array(bytes)
                    while octets.count > 1, octets[0] == 0 { octets.removeFirst() }
                    serials.append(octets.hexString)
                }
                return serials
            }
            return []
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError(.malformedInput, "the data is not a CRL", underlying: error)
        }
    }
}
