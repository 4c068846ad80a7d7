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
    static let signedData: ASN1ObjectIdentifier = [1, 2, 840, 113_549, 1, 7, 2]
    static let data: ASN1ObjectIdentifier = [1, 2, 840, 113_549, 1, 7, 1]

    /// The DER of a certs-only SignedData holding `certificates` (each one DER certificate), in order.
    public static func encode(_ certificates: [[UInt8]]) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.appendConstructedNode(identifier: .sequence) { contentInfo in
            try contentInfo.serialize(signedData)
            try contentInfo.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { explicit in
                try explicit.appendConstructedNode(identifier: .sequence) { signed in
                    try signed.serialize(1)
                    try signed.appendConstructedNode(identifier: .set) { _ in }
                    try signed.appendConstructedNode(identifier: .sequence) { encapsulated in
                        try encapsulated.serialize(data)
                    }
                    try signed.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { set in
                        // SET OF is DER-sorted by encoding; EST readers take any order, but keep DER.
                        for certificate in certificates.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                            set.serializeRawBytes(certificate)
                        }
                    }
                    try signed.appendConstructedNode(identifier: .set) { _ in }
                }
            }
        }
        return serializer.serializedBytes
    }

    /// The base64 body EST sends (`Content-Transfer-Encoding: base64`), wrapped at 64 columns.
    public static func base64(_ certificates: [[UInt8]]) throws -> String {
        let encoded = Data(try encode(certificates)).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return encoded + "\n"
    }
}
