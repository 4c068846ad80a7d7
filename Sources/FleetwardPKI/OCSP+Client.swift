public import Foundation
import Crypto
import SwiftASN1
public import X509

// The relying party's side of OCSP (RFC 6960): asking about a certificate and reading the answer.
// The answer's signature is not checked here: `openssl ocsp` or a TLS library does that; this
// reads what a Fleetward responder said, for the demo and the device kit's diagnostics.
extension OCSP {
    /// A DER OCSPRequest for `certificate`, issued by `issuer` (CertID with SHA-1, as RFC 5019
    /// clients send; no nonce).
    public static func request(for certificate: Certificate, issuer: Certificate) throws -> [UInt8] {
        let nameHash = Array(Insecure.SHA1.hash(data: try DERBytes.encode(issuer.subject)))
        let keyHash = Array(Insecure.SHA1.hash(data: issuer.publicKey.subjectPublicKeyInfoBytes))
        let sha1 = DERBytes.tlv(0x30, DERBytes.tlv(0x06, HashAlgorithm.oids[0].0) + [0x05, 0x00])
        let certID = DERBytes.tlv(
            0x30, sha1 + DERBytes.tlv(0x04, nameHash) + DERBytes.tlv(0x04, keyHash) + DERBytes.tlv(0x02, integerOctets(certificate)))
        let requestList = DERBytes.tlv(0x30, DERBytes.tlv(0x30, certID))
        return DERBytes.tlv(0x30, DERBytes.tlv(0x30, requestList))
    }

    /// The serial as a DER INTEGER's content octets: big-endian, a leading zero when the top bit is set.
    private static func integerOctets(_ certificate: Certificate) -> [UInt8] {
        var octets = Array(certificate.serialNumber.bytes)
        while octets.count > 1, octets[0] == 0, octets[1] & 0x80 == 0 { octets.removeFirst() }
        if let first = octets.first, first & 0x80 != 0 { octets.insert(0, at: 0) }
        return octets
    }

    /// What an OCSPResponse says: its status, and for a successful one each certificate's
    /// (serial, lower-case hex) status.
    /// - Throws: ``PKIError`` `malformedInput` when it is not an OCSPResponse.
    public static func statuses(inResponse der: [UInt8]) throws -> (status: ResponseStatus, certificates: [(serialHex: String, status: CertStatus)]) {
        func fail(_ what: String) -> PKIError { PKIError(.malformedInput, "the data is not an OCSP response: \(what)") }
        do {
            let root = try DER.parse(der)
            guard root.identifier == .sequence, case .constructed(let top) = root.content else { throw fail("not a SEQUENCE") }
            var parts = top.makeIterator()
            guard let statusNode = parts.next(), statusNode.identifier == .enumerated, case .primitive(let statusBytes) = statusNode.content,
                let statusByte = statusBytes.last, let status = ResponseStatus(rawValue: statusByte)
            else { throw fail("responseStatus") }
            guard status == .successful else { return (status, []) }
            guard let wrapped = parts.next(), case .constructed(let explicit) = wrapped.content,
                let responseBytes = explicit.first(where: { _ in true }), case .constructed(let typed) = responseBytes.content
            else { throw fail("responseBytes") }
            var typedParts = typed.makeIterator()
            guard Array(typedParts.next()?.encodedBytes ?? []) == basicOID, let octets = typedParts.next(),
                case .primitive(let basicDER) = octets.content
            else { throw fail("not a BasicOCSPResponse") }
            let basic = try DER.parse(Array(basicDER))
            guard case .constructed(let basicParts) = basic.content, let data = basicParts.first(where: { _ in true }),
                case .constructed(let dataParts) = data.content
            else { throw fail("tbsResponseData") }
            var certificates: [(String, CertStatus)] = []
            for field in dataParts where field.identifier == .sequence {
                guard case .constructed(let singles) = field.content else { continue }
                for single in singles {
                    guard case .constructed(let singleParts) = single.content else { throw fail("SingleResponse") }
                    var fields = singleParts.makeIterator()
                    guard let certIDNode = fields.next(), let statusChoice = fields.next() else { throw fail("SingleResponse") }
                    let certID = try parseCertID(certIDNode)
                    switch statusChoice.identifier.tagNumber {
                    case 0: certificates.append((certID.serialHex, .good))
                    case 1:
                        guard case .constructed(let info) = statusChoice.content, let timeNode = info.first(where: { _ in true }) else {
                            throw fail("RevokedInfo")
                        }
                        let time = try GeneralizedTime(derEncoded: timeNode)
                        var reason = 0
                        for node in info.dropFirst() {
                            if case .constructed(let inner) = node.content, let reasonNode = inner.first(where: { _ in true }),
                                case .primitive(let value) = reasonNode.content, let code = value.last
                            {
                                reason = Int(code)
                            }
                        }
                        certificates.append((certID.serialHex, .revoked(time: date(time), reason: reason)))
                    default: certificates.append((certID.serialHex, .unknown))
                    }
                }
            }
            return (status, certificates)
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError(.malformedInput, "the data is not an OCSP response", underlying: error)
        }
    }
}

/// A GeneralizedTime as a `Date` (UTC).
private func date(_ time: GeneralizedTime) -> Date {
    var parts = tm()
    parts.tm_year = Int32(time.year - 1900)
    parts.tm_mon = Int32(time.month - 1)
    parts.tm_mday = Int32(time.day)
    parts.tm_hour = Int32(time.hours)
    parts.tm_min = Int32(time.minutes)
    parts.tm_sec = Int32(time.seconds)
    return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)) + time.fractionalSeconds)
}
