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
    /// Written directly, outside-in, with every length known up front: this runs once per EST
    /// enrollment, and nested serializer closures moved each certificate's bytes once per level.
    public static func encode(_ certificates: [[UInt8]]) throws -> [UInt8] {
        // SET OF is DER-sorted by encoding; EST readers take any order, but keep DER.
        let sorted = certificates.count > 1 ? certificates.sorted(by: { $0.lexicographicallyPrecedes($1) }) : certificates
        let certificatesLength = sorted.reduce(0) { $0 + $1.count }
        // version INTEGER 1, digestAlgorithms SET {}, encapContentInfo SEQUENCE { id-data }
        let prefix: [UInt8] = [0x02, 0x01, 0x01, 0x31, 0x00, 0x30, 0x0B, 0x06, 0x09] + dataOID
        let signerInfos: [UInt8] = [0x31, 0x00]
        let certificatesField = header(0xA0, certificatesLength)
        let signedDataLength = prefix.count + certificatesField.count + certificatesLength + signerInfos.count
        let signedDataHeader = header(0x30, signedDataLength)
        let explicitHeader = header(0xA0, signedDataHeader.count + signedDataLength)
        let contentType: [UInt8] = [0x06, 0x09] + signedDataOID
        let contentInfoLength = contentType.count + explicitHeader.count + signedDataHeader.count + signedDataLength
        var out = header(0x30, contentInfoLength)
        out.reserveCapacity(out.count + contentInfoLength)
        out += contentType
        out += explicitHeader
        out += signedDataHeader
        out += prefix
        out += certificatesField
        for certificate in sorted { out += certificate }
        out += signerInfos
        return out
    }

    /// 1.2.840.113549.1.7.2 and 1.2.840.113549.1.7.1, content octets.
    static let signedDataOID: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02]
    static let dataOID: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01]

    /// A DER tag and definite length.
    static func header(_ tag: UInt8, _ length: Int) -> [UInt8] {
        if length < 0x80 { return [tag, UInt8(length)] }
        var octets: [UInt8] = []
        var rest = length
        while rest > 0 {
            octets.insert(UInt8(rest & 0xFF), at: 0)
            rest >>= 8
        }
        return [tag, 0x80 | UInt8(octets.count)] + octets
    }

    /// The base64 body EST sends (`Content-Transfer-Encoding: base64`), wrapped at 64 columns.
    public static func base64(_ certificates: [[UInt8]]) throws -> String {
        let encoded = Data(try encode(certificates)).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return encoded + "\n"
    }
}
