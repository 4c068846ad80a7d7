/// An error from an authority use case (init, load, issue, enroll, claim).
public struct AuthorityError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: String, Hashable, Sendable {
            case notInitialized
            case alreadyInitialized
            case invalidConfiguration
            case invalidRequest
            case unauthenticated
            case forbidden
            case notFound
            case conflict
            case tooManyRequests
            case unavailable
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
        /// The caller did not prove who it is (no credential, or a wrong one).
        public static let unauthenticated = Code(.unauthenticated)
        /// The caller is known but may not do this (a revoked certificate, a suspended device…).
        public static let forbidden = Code(.forbidden)
        /// What the request names does not exist.
        public static let notFound = Code(.notFound)
        /// The request contradicts the registry's state (already claimed, wrong lifecycle step).
        public static let conflict = Code(.conflict)
        /// Too many failed attempts: ``AuthorityError/retryAfter`` says when to try again.
        public static let tooManyRequests = Code(.tooManyRequests)
        /// The registry or a key store cannot be reached now; trying again may succeed.
        public static let unavailable = Code(.unavailable)

        public var description: String { backing.rawValue }
    }

    public var code: Code
    public var message: String
    public var underlying: (any Error)?
    /// For `tooManyRequests`: seconds until another attempt may succeed.
    public var retryAfter: Int?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil, retryAfter: Int? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.retryAfter = retryAfter
    }

    public var description: String { message }
}

extension AuthorityError: Equatable {
    public static func == (lhs: AuthorityError, rhs: AuthorityError) -> Bool { lhs.code == rhs.code }
}
