public import Foundation
import Crypto
import SwiftASN1
public import X509

/// The Online Certificate Status Protocol (RFC 6960): reading requests and writing signed
/// BasicOCSPResponses, by hand like the certificates and CRLs.
///
/// ```
/// OCSPRequest  ::= SEQUENCE { tbsRequest TBSRequest, optionalSignature [0] EXPLICIT … OPTIONAL }
/// TBSRequest   ::= SEQUENCE { version [0] EXPLICIT DEFAULT v1, requestorName [1] EXPLICIT OPTIONAL,
///                             requestList SEQUENCE OF Request, requestExtensions [2] EXPLICIT OPTIONAL }
/// Request      ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT OPTIONAL }
/// CertID       ::= SEQUENCE { hashAlgorithm, issuerNameHash OCTET STRING, issuerKeyHash OCTET STRING,
///                             serialNumber INTEGER }
/// OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT SEQUENCE {
///                             id-pkix-ocsp-basic, OCTET STRING (BasicOCSPResponse) } OPTIONAL }
/// ```
public enum OCSP {
    /// The largest request read: a few CertIDs and a nonce are a few hundred bytes.
    public static let maximumRequestBytes = 8 * 1024
    /// The most certificates asked about in one request.
    public static let maximumCertificates = 64

    /// OCSPResponseStatus (RFC 6960 §4.2.1).
    public enum ResponseStatus: UInt8, Sendable {
        case successful = 0
        case malformedRequest = 1
        case internalError = 2
        case tryLater = 3
        case sigRequired = 5
        case unauthorized = 6
    }

    /// The hash a CertID was computed with.
    public enum HashAlgorithm: Sendable, Equatable {
        case sha1, sha256, sha384, sha512

        static let oids: [([UInt8], HashAlgorithm)] = [
            ([0x2B, 0x0E, 0x03, 0x02, 0x1A], .sha1),
            ([0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01], .sha256),
            ([0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02], .sha384),
            ([0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03], .sha512),
        ]

        public func hash(_ bytes: some DataProtocol) -> [UInt8] {
            switch self {
            case .sha1: Array(Insecure.SHA1.hash(data: bytes))
            case .sha256: Array(SHA256.hash(data: bytes))
            case .sha384: Array(SHA384.hash(data: bytes))
            case .sha512: Array(SHA512.hash(data: bytes))
            }
        }
    }

    /// One certificate asked about.
    public struct CertID: Sendable, Equatable {
        public var hashAlgorithm: HashAlgorithm
        public var issuerNameHash: [UInt8]
        public var issuerKeyHash: [UInt8]
        /// The serial number, lower-case hex without leading zero octets.
        public var serialHex: String
        /// The CertID exactly as received, echoed in the answer.
        public var der: [UInt8]

        /// Whether this CertID names a certificate issued by `issuer`.
        public func isIssued(by issuer: Certificate) -> Bool {
            guard let name = try? DERBytes.encode(issuer.subject) else { return false }
            return hashAlgorithm.hash(name) == issuerNameHash
                && hashAlgorithm.hash(issuer.publicKey.subjectPublicKeyInfoBytes) == issuerKeyHash
        }
    }

    /// A parsed request.
    public struct Request: Sendable {
        public var certIDs: [CertID]
        /// The nonce extension (id-pkix-ocsp-nonce), as received, to echo (RFC 8954).
        public var nonceExtension: [UInt8]?
    }

    /// What is known about one certificate.
    public enum CertStatus: Sendable, Equatable {
        case good
        case revoked(time: Date, reason: Int)
        case unknown
    }

    public struct SingleResponse: Sendable {
        public var certID: CertID
        public var status: CertStatus
        public var thisUpdate: Date
        public var nextUpdate: Date

        public init(certID: CertID, status: CertStatus, thisUpdate: Date, nextUpdate: Date) {
            self.certID = certID
            self.status = status
            self.thisUpdate = thisUpdate
            self.nextUpdate = nextUpdate
        }
    }

    static let nonceOID: [UInt8] = [0x06, 0x09, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02]
    static let basicOID: [UInt8] = [0x06, 0x09, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01]

    /// Reads an OCSPRequest. Signed requests are read too; their signature is not needed.
    ///
    /// - Throws: ``PKIError`` `malformedInput` (or `inputTooLarge`).
    public static func parseRequest(_ der: [UInt8]) throws -> Request {
        guard der.count <= maximumRequestBytes else {
            throw PKIError(.inputTooLarge, "the OCSP request is \(der.count) bytes; the limit is \(maximumRequestBytes)")
        }
        do {
            let root = try DER.parse(der)
            guard root.identifier == .sequence, case .constructed(let outer) = root.content,
                let tbs = outer.first(where: { _ in true }), tbs.identifier == .sequence, case .constructed(let fields) = tbs.content
            else { throw malformed("not an OCSPRequest") }
            var certIDs: [CertID] = []
            var nonce: [UInt8]?
            var sawList = false
            for field in fields {
                if field.identifier == .sequence {
                    guard !sawList, case .constructed(let requests) = field.content else { throw malformed("two request lists") }
                    sawList = true
                    for request in requests {
                        guard request.identifier == .sequence, case .constructed(let parts) = request.content,
                            let certID = parts.first(where: { _ in true })
                        else { throw malformed("a Request is not a SEQUENCE") }
                        certIDs.append(try parseCertID(certID))
                        guard certIDs.count <= maximumCertificates else { throw malformed("more than \(maximumCertificates) certificates") }
                    }
                } else if field.identifier == ASN1Identifier(tagWithNumber: 2, tagClass: .contextSpecific) {
                    guard case .constructed(let wrapped) = field.content, let extensions = wrapped.first(where: { _ in true }),
                        case .constructed(let list) = extensions.content
                    else { throw malformed("requestExtensions") }
                    for item in list where Array(item.encodedBytes).starts(with: [0x30]) {
                        guard case .constructed(let parts) = item.content, let oid = parts.first(where: { _ in true }) else { continue }
                        if Array(oid.encodedBytes) == nonceOID { nonce = Array(item.encodedBytes) }
                    }
                }
            }
            guard sawList, !certIDs.isEmpty else { throw malformed("it asks about no certificate") }
            return Request(certIDs: certIDs, nonceExtension: nonce)
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError(.malformedInput, "the data is not an OCSP request", underlying: error)
        }
    }

    static func parseCertID(_ node: ASN1Node) throws -> CertID {
        guard node.identifier == .sequence, case .constructed(let parts) = node.content else { throw malformed("CertID") }
        var iterator = parts.makeIterator()
        guard let algorithm = iterator.next(), case .constructed(let algorithmParts) = algorithm.content,
            let oidNode = algorithmParts.first(where: { _ in true }), oidNode.identifier == .objectIdentifier,
            case .primitive(let oid) = oidNode.content,
            let hash = HashAlgorithm.oids.first(where: { $0.0 == Array(oid) })?.1
        else { throw malformed("a CertID hash algorithm that is not SHA-1 or SHA-2") }
        guard let nameNode = iterator.next(), nameNode.identifier == .octetString, case .primitive(let nameHash) = nameNode.content,
            let keyNode = iterator.next(), keyNode.identifier == .octetString, case .primitive(let keyHash) = keyNode.content,
            let serialNode = iterator.next(), serialNode.identifier == .integer, case .primitive(let serial) = serialNode.content,
            !serial.isEmpty, serial.count <= 21, iterator.next() == nil
        else { throw malformed("CertID fields") }
        var octets = Array(serial)
        while octets.count > 1, octets[0] == 0 { octets.removeFirst() }
        return CertID(
            hashAlgorithm: hash, issuerNameHash: Array(nameHash), issuerKeyHash: Array(keyHash), serialHex: octets.hexString,
            der: Array(node.encodedBytes))
    }

    static func malformed(_ what: String) -> PKIError {
        PKIError(.malformedInput, "the data is not an OCSP request: \(what)")
    }

    /// An OCSPResponse carrying only an error status.
    public static func errorResponse(_ status: ResponseStatus) -> [UInt8] {
        [0x30, 0x03, 0x0A, 0x01, status.rawValue]
    }
}

/// A delegated OCSP responder (RFC 6960 §4.2.2.2): a certificate with the `ocsp` profile issued
/// by the CA it answers for, and its key.
public struct OCSPResponder: Sendable {
    public let certificate: Certificate
    public let certificateDER: [UInt8]
    let key: SigningKey
    /// SHA-1 of the responder's public key bits: ResponderID byKey.
    let keyHash: [UInt8]

    public init(certificateDER: [UInt8], key: SigningKey) throws {
        let certificate = try Certificate(derEncoded: certificateDER)
        guard certificate.publicKey == key.publicKey else {
            throw PKIError(.invalidRequest, "the OCSP responder key does not match its certificate")
        }
        self.certificate = certificate
        self.certificateDER = certificateDER
        self.key = key
        keyHash = Array(Insecure.SHA1.hash(data: certificate.publicKey.subjectPublicKeyInfoBytes))
    }

    /// A successful OCSPResponse with `responses`, signed by this responder, echoing `nonce`.
    public func response(_ responses: [OCSP.SingleResponse], nonceExtension: [UInt8]?, producedAt: Date) throws -> [UInt8] {
        var singles: [UInt8] = []
        for single in responses {
            var status: [UInt8]
            switch single.status {
            case .good: status = [0x80, 0x00]
            case .unknown: status = [0x82, 0x00]
            case .revoked(let time, let reason):
                var info = ASN1Time.generalizedDER(time)
                if (0...10).contains(reason), reason != 7 { info += DERBytes.tlv(0xA0, [0x0A, 0x01, UInt8(reason)]) }
                status = DERBytes.tlv(0xA1, info)
            }
            singles += DERBytes.tlv(
                0x30,
                single.certID.der + status + ASN1Time.generalizedDER(single.thisUpdate)
                    + DERBytes.tlv(0xA0, ASN1Time.generalizedDER(single.nextUpdate)))
        }
        var data = DERBytes.tlv(0xA2, DERBytes.tlv(0x04, keyHash))  // responderID byKey
        data += ASN1Time.generalizedDER(producedAt)
        data += DERBytes.tlv(0x30, singles)
        if let nonceExtension { data += DERBytes.tlv(0xA1, DERBytes.tlv(0x30, nonceExtension)) }
        let tbs = DERBytes.tlv(0x30, data)
        let signature = try key.signDER(tbs)
        let basic = DERBytes.tlv(
            0x30,
            tbs + key.signatureAlgorithmDER + DERBytes.tlv(0x03, [0x00] + signature)
                + DERBytes.tlv(0xA0, DERBytes.tlv(0x30, certificateDER)))
        let responseBytes = DERBytes.tlv(0x30, OCSP.basicOID + DERBytes.tlv(0x04, basic))
        return DERBytes.tlv(0x30, [0x0A, 0x01, 0x00] + DERBytes.tlv(0xA0, responseBytes))
    }
}
