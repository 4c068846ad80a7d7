/// An error from the registry: an illegal transition, a missing or duplicate row, bad input, a store failure.
///
/// Messages name IDs and states, never secrets.
public struct RegistryError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: String, Hashable, Sendable {
            case illegalTransition
            case forbidden
            case notFound
            case duplicate
            case invalidInput
            case storage
            case auditBroken
        }
        private let backing: Backing
        private init(_ backing: Backing) { self.backing = backing }

        /// The lifecycle does not allow this change of state.
        public static let illegalTransition = Code(.illegalTransition)
        /// The actor's role or ownership does not allow this action.
        public static let forbidden = Code(.forbidden)
        /// No such device, token or row.
        public static let notFound = Code(.notFound)
        /// A row with this key already exists.
        public static let duplicate = Code(.duplicate)
        /// A field or row is malformed.
        public static let invalidInput = Code(.invalidInput)
        /// The database failed.
        public static let storage = Code(.storage)
        /// The audit chain does not verify.
        public static let auditBroken = Code(.auditBroken)

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

extension RegistryError: Equatable {
    public static func == (lhs: RegistryError, rhs: RegistryError) -> Bool { lhs.code == rhs.code }
}
