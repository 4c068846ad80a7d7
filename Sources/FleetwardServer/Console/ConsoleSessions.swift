import Crypto
import FleetwardRegistry
import Foundation
import Synchronization

/// Signed-in console users: an API token exchanged for a short-lived session.
///
/// The browser holds a random 256-bit session secret in an `HttpOnly`, `SameSite=Strict` cookie;
/// the server keeps only its SHA-256 (a stolen memory dump or log cannot replay a session), with
/// the actor, the API token it came from (re-checked on every request, so revoking the token
/// ends the session) and a CSRF token that every state-changing form must send back.
final class ConsoleSessions: Sendable {
    struct Session: Sendable {
        var actor: Actor
        /// The API token's ID (never its secret).
        var tokenID: String
        var csrf: String
        var expires: Date
    }

    /// How long a session lasts from sign-in (not extended by use).
    let lifetime: TimeInterval
    /// The most sessions held at once; the oldest go first.
    let capacity: Int
    private let sessions = Mutex<[String: Session]>([:])

    init(lifetime: TimeInterval = 30 * 60, capacity: Int = 10_000) {
        self.lifetime = lifetime
        self.capacity = capacity
    }

    /// 32 random bytes, base64url without padding.
    static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    private static func key(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// A new session for `actor`: the cookie's secret (given to the browser once) and the session.
    func create(for actor: Actor, at time: Date) -> (secret: String, session: Session) {
        let secret = Self.randomToken()
        let session = Session(actor: actor, tokenID: actor.name, csrf: Self.randomToken(), expires: time.addingTimeInterval(lifetime))
        sessions.withLock { sessions in
            sessions = sessions.filter { $0.value.expires > time }
            if sessions.count >= capacity, let oldest = sessions.min(by: { $0.value.expires < $1.value.expires }) {
                sessions[oldest.key] = nil
            }
            sessions[Self.key(secret)] = session
        }
        return (secret, session)
    }

    /// The live session for a cookie's secret; an expired one is forgotten.
    func session(_ secret: String?, at time: Date) -> Session? {
        guard let secret, secret.utf8.count == 43 else { return nil }
        let key = Self.key(secret)
        return sessions.withLock { sessions in
            guard let session = sessions[key] else { return nil }
            guard session.expires > time else {
                sessions[key] = nil
                return nil
            }
            return session
        }
    }

    func end(_ secret: String?) {
        guard let secret else { return }
        let key = Self.key(secret)
        _ = sessions.withLock { $0.removeValue(forKey: key) }
    }

    /// Compares two tokens in constant time (for their length).
    static func matches(_ given: String?, _ expected: String) -> Bool {
        guard let given else { return false }
        let a = Array(given.utf8)
        let b = Array(expected.utf8)
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
