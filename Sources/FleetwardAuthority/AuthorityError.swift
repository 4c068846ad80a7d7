/// An error from an authority use case (init, load, issue).
public struct AuthorityError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: String, Hashable, Sendable {
            case notInitialized
            case alreadyInitialized
            case invalidConfiguration
            case invalidRequest
        }
        private let backing: Backing
        private init(_ backing: Backing) { self.backing = backing }

        /// The data directory holds no Fleetward CA.
        public static let notInitialized = Code(.notInitialized)
        /// The data directory already holds a CA and `--force` was not given.
        public static let alreadyInitialized = Code(.alreadyInitialized)
        /// `fleetward.json` or a CA file is missing or inconsistent.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The request does not fit the hierarchy (e.g. a profile with the wrong identity).
        public static let invalidRequest = Code(.invalidRequest)

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

extension AuthorityError: Equatable {
    public static func == (lhs: AuthorityError, rhs: AuthorityError) -> Bool { lhs.code == rhs.code }
}
