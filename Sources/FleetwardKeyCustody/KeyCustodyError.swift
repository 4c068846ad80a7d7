/// An error from key custody: a file that cannot be read or written, or a key that will not open.
///
/// Messages name paths and facts, never key material or passphrases.
public struct KeyCustodyError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: String, Hashable, Sendable {
            case io
            case notFound
            case wrongPassphrase
            case malformedKey
            case insecurePermissions
            case weakPassphrase
        }
        private let backing: Backing
        private init(_ backing: Backing) { self.backing = backing }

        /// A read, write, fsync or rename failed.
        public static let io = Code(.io)
        /// The key file does not exist.
        public static let notFound = Code(.notFound)
        /// The passphrase does not open the key.
        public static let wrongPassphrase = Code(.wrongPassphrase)
        /// The key file is not an encrypted key Fleetward can read.
        public static let malformedKey = Code(.malformedKey)
        /// The key file can be read by others than its owner.
        public static let insecurePermissions = Code(.insecurePermissions)
        /// The passphrase is too short to protect a CA key.
        public static let weakPassphrase = Code(.weakPassphrase)

        public var description: String { backing.rawValue }
    }

    public var code: Code
    public var message: String
    public var underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String { message }
}

extension KeyCustodyError: Equatable {
    public static func == (lhs: KeyCustodyError, rhs: KeyCustodyError) -> Bool { lhs.code == rhs.code }
}
