/// An error from the PKI core: a malformed input, a refused request or a failed decryption.
///
/// Compare errors by ``code``; ``message`` is one sentence for a person and never contains
/// secret material (keys, passphrases, factory secrets).
public struct PKIError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as a value that can grow without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: String, Hashable, Sendable {
            case malformedInput
            case inputTooLarge
            case badSignature
            case unsupportedKey
            case unsupportedAlgorithm
            case identityMismatch
            case invalidIdentity
            case invalidRequest
            case wrongPassphrase
            case unsupportedEncryption
            case signingFailed
        }

        private let backing: Backing
        private init(_ backing: Backing) { self.backing = backing }

        /// The bytes are not the DER, PEM or structure they should be.
        public static let malformedInput = Code(.malformedInput)
        /// The input is larger than the limit for its kind.
        public static let inputTooLarge = Code(.inputTooLarge)
        /// A signature (for example a CSR's proof of possession) does not verify.
        public static let badSignature = Code(.badSignature)
        /// The public key's type or size is not allowed.
        public static let unsupportedKey = Code(.unsupportedKey)
        /// A signature or encryption algorithm is not allowed.
        public static let unsupportedAlgorithm = Code(.unsupportedAlgorithm)
        /// A request names an identity other than the one proven.
        public static let identityMismatch = Code(.identityMismatch)
        /// A device ID or host name is not well formed.
        public static let invalidIdentity = Code(.invalidIdentity)
        /// The combination of profile, identity and lifetime is not allowed.
        public static let invalidRequest = Code(.invalidRequest)
        /// An encrypted key could not be opened with the passphrase given.
        public static let wrongPassphrase = Code(.wrongPassphrase)
        /// An encrypted key uses a scheme Fleetward does not read.
        public static let unsupportedEncryption = Code(.unsupportedEncryption)
        /// The signing key failed to produce a signature.
        public static let signingFailed = Code(.signingFailed)

        public var description: String { backing.rawValue }
    }

    /// What went wrong.
    public var code: Code
    /// One sentence naming the facts and what to check.
    public var message: String
    /// The lower-level error, for logs only.
    public var underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String { message }
}

extension PKIError: Equatable {
    public static func == (lhs: PKIError, rhs: PKIError) -> Bool { lhs.code == rhs.code }
}
