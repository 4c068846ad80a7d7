import SwiftASN1

/// Names the key inside a CSR that swift-certificates would not parse, so the refusal can say
/// what the key is (RSA-1024, secp256k1, Ed448, DSA…) instead of only that parsing failed.
enum KeyDiagnosis {
    /// A description such as `RSA-1024` or `EC secp256k1`, or nil when `der` does not even have
    /// the shape of a CSR.
    static func describeKey(inCSR der: [UInt8]) -> String? {
        guard let root = try? DER.parse(der) else { return nil }
        var description: String?
        try? DER.sequence(root, identifier: .sequence) { request in
            guard let info = request.next() else { return }
            try DER.sequence(info, identifier: .sequence) { info in
                _ = info.next()  // version
                _ = info.next()  // subject
                guard let spki = info.next() else { return }
                try DER.sequence(spki, identifier: .sequence) { spki in
                    guard let algorithmNode = spki.next() else { return }
                    var algorithm: ASN1ObjectIdentifier?
                    var parameter: ASN1Node?
                    try DER.sequence(algorithmNode, identifier: .sequence) { nodes in
                        algorithm = try ASN1ObjectIdentifier(derEncoded: &nodes)
                        parameter = nodes.next()
                        while nodes.next() != nil {}
                    }
                    let key = try ASN1BitString(derEncoded: &spki)
                    description = name(algorithm: algorithm, parameter: parameter, keyBits: Array(key.bytes))
                }
                while info.next() != nil {}
            }
            while request.next() != nil {}
        }
        return description
    }

    private static func name(algorithm: ASN1ObjectIdentifier?, parameter: ASN1Node?, keyBits: [UInt8]) -> String {
        switch algorithm {
        case [1, 2, 840, 113_549, 1, 1, 1]:
            if let bits = rsaModulusBits(keyBits) { return "RSA-\(bits)" }
            return "RSA"
        case [1, 2, 840, 10_045, 2, 1]:
            guard let parameter, let curve = try? ASN1ObjectIdentifier(derEncoded: parameter) else { return "EC (explicit curve)" }
            switch curve {
            case [1, 2, 840, 10_045, 3, 1, 7]: return "P-256"
            case [1, 3, 132, 0, 34]: return "P-384"
            case [1, 3, 132, 0, 35]: return "P-521"
            case [1, 3, 132, 0, 10]: return "EC secp256k1"
            default: return "EC curve \(curve)"
            }
        case [1, 3, 101, 112]: return "Ed25519"
        case [1, 3, 101, 113]: return "Ed448"
        case [1, 3, 101, 110]: return "X25519"
        case [1, 2, 840, 10_040, 4, 1]: return "DSA"
        case let other?: return "algorithm \(other)"
        case nil: return "unknown"
        }
    }

    private static func rsaModulusBits(_ key: [UInt8]) -> Int? {
        guard let node = try? DER.parse(key) else { return nil }
        var bits: Int?
        try? DER.sequence(node, identifier: .sequence) { nodes in
            guard let modulus = nodes.next(), case .primitive(let content) = modulus.content else { return }
            var bytes = content
            while let first = bytes.first, first == 0 { bytes = bytes.dropFirst() }
            if let first = bytes.first { bits = (bytes.count - 1) * 8 + (8 - first.leadingZeroBitCount) }
            while nodes.next() != nil {}
        }
        return bits
    }
}
