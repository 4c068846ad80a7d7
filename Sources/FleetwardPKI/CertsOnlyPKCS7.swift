public import Foundation
import SwiftASN1

/// A degenerate "certs-only" PKCS#7 / CMS SignedData (RFC 5652 §5, RFC 7030 §4.1.3): certificates
/// and no signers, the answer EST gives for `cacerts`, `simpleenroll` and `simplereenroll`.
///
/// ```
/// ContentInfo ::= SEQUENCE { contentType id-signedData, content [0] EXPLICIT SignedData }
/// SignedData  ::= SEQUENCE { version 1, digestAlgorithms SET {}, encapContentInfo { id-data },
///                            certificates [0] IMPLICIT SET OF Certificate, signerInfos SET {} }
/// ```
public enum CertsOnlyPKCS7 {

    /// The DER of a certs-only SignedData holding `certificates` (each one DER certificate), in order.
    ///
    /// Written into one buffer: this runs once per EST enrollment.
    public static func encode(_ certificates: [[UInt8]]) -> [UInt8] {
        // SET OF is DER-sorted by encoding; EST readers take any order, but keep DER.
        let sorted = certificates.count > 1 ? certificates.sorted(by: { $0.lexicographicallyPrecedes($1) }) : certificates
        var out = DERWriter(capacity: sorted.reduce(64) { $0 + $1.count })
        out.constructed(0x30) { contentInfo in
            contentInfo.element(0x06, signedDataOID)
            contentInfo.constructed(0xA0) { explicit in
                explicit.constructed(0x30) { signedData in
                    // version INTEGER 1, digestAlgorithms SET {}, encapContentInfo SEQUENCE { id-data }
                    signedData.append([0x02, 0x01, 0x01, 0x31, 0x00, 0x30, 0x0B])
                    signedData.element(0x06, dataOID)
                    signedData.constructed(0xA0) { field in
                        for certificate in sorted { field.append(certificate) }
                    }
                    signedData.append([0x31, 0x00])  // signerInfos SET {}
                }
            }
        }
        return out.bytes
    }

    /// 1.2.840.113549.1.7.2 and 1.2.840.113549.1.7.1, content octets.
    static let signedDataOID: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02]
    static let dataOID: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01]

    /// The base64 body EST sends (`Content-Transfer-Encoding: base64`), wrapped at 64 columns.
    public static func base64(_ certificates: [[UInt8]]) -> String {
        String(decoding: base64Bytes(certificates), as: UTF8.self)
    }

    /// ``base64(_:)`` as UTF-8 bytes, for a response body.
    public static func base64Bytes(_ certificates: [[UInt8]]) -> [UInt8] {
        Base64.encodeLines(encode(certificates))
    }

    /// The certificates (DER, in the order sent) of a certs-only SignedData: what an EST client
    /// reads from `cacerts`, `simpleenroll` and `simplereenroll`.
    ///
    /// - Throws: ``PKIError`` `malformedInput` when the bytes are not a SignedData with certificates.
    public static func decode(_ der: [UInt8]) throws -> [[UInt8]] {
        do {
            let root = try DER.parse(der)
            guard root.identifier == .sequence, case .constructed(let info) = root.content else { throw malformed("no ContentInfo") }
            var fields = info.makeIterator()
            guard let type = fields.next(), type.identifier == .objectIdentifier, case .primitive(let oid) = type.content,
                Array(oid) == signedDataOID
            else { throw malformed("not SignedData") }
            guard let explicit = fields.next(), explicit.identifier == contextZero, case .constructed(let wrapped) = explicit.content,
                let signedData = wrapped.first(where: { _ in true }), signedData.identifier == .sequence,
                case .constructed(let parts) = signedData.content
            else { throw malformed("no SignedData content") }
            for part in parts where part.identifier == contextZero {
                guard case .constructed(let certificates) = part.content else { throw malformed("certificates is not a SET") }
                let list = certificates.map { Array($0.encodedBytes) }
                guard !list.isEmpty else { break }
                return list
            }
            throw malformed("it holds no certificates")
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError(.malformedInput, "the data is not a certs-only PKCS#7 SignedData", underlying: error)
        }
    }

    /// ``decode(_:)`` of the base64 body EST sends; line breaks and other whitespace are ignored.
    public static func decode(base64 text: String) throws -> [[UInt8]] {
        let compact = String(text.unicodeScalars.filter { !$0.properties.isWhitespace })
        guard let der = Data(base64Encoded: compact), !der.isEmpty else {
            throw PKIError(.malformedInput, "the PKCS#7 body is not base64")
        }
        return try decode(Array(der))
    }

    static let contextZero = ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)

    static func malformed(_ what: String) -> PKIError {
        PKIError(.malformedInput, "the data is not a certs-only PKCS#7 SignedData: \(what)")
    }
}
