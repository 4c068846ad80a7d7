import Foundation
import Testing

@testable import FleetwardRegistry
@testable import FleetwardServer

/// Console sessions without a server: a manual clock, no I/O.
@Suite struct ConsoleSessionsTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)
    let actor = Actor(role: .operator, name: "0123456789abcdef")

    @Test func aSessionLastsItsLifetimeAndNotASecondMore() {
        let sessions = ConsoleSessions(lifetime: 600)
        let (secret, session) = sessions.create(for: actor, at: start)
        #expect(sessions.session(secret, at: start.addingTimeInterval(599))?.actor == actor)
        #expect(sessions.session(secret, at: start.addingTimeInterval(600)) == nil)
        // Once expired it is gone, even for a clock that goes back.
        #expect(sessions.session(secret, at: start) == nil)
        #expect(session.csrf.utf8.count == 43 && secret.utf8.count == 43 && session.csrf != secret)
    }

    @Test func onlyTheExactSecretOpensASessionAndSigningOutEndsIt() {
        let sessions = ConsoleSessions(lifetime: 600)
        let (secret, _) = sessions.create(for: actor, at: start)
        var flipped = Array(secret.utf8)
        flipped[10] = flipped[10] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(sessions.session(String(decoding: flipped, as: UTF8.self), at: start) == nil)
        #expect(sessions.session(String(secret.dropLast()), at: start) == nil)
        #expect(sessions.session(nil, at: start) == nil)
        sessions.end(secret)
        #expect(sessions.session(secret, at: start) == nil)
    }

    @Test func theOldestSessionGoesWhenTheStoreIsFull() {
        let sessions = ConsoleSessions(lifetime: 600, capacity: 2)
        let first = sessions.create(for: actor, at: start).secret
        let second = sessions.create(for: actor, at: start.addingTimeInterval(1)).secret
        let third = sessions.create(for: actor, at: start.addingTimeInterval(2)).secret
        #expect(sessions.session(first, at: start.addingTimeInterval(3)) == nil)
        #expect(sessions.session(second, at: start.addingTimeInterval(3)) != nil)
        #expect(sessions.session(third, at: start.addingTimeInterval(3)) != nil)
    }

    @Test func csrfTokensCompareWholeAndExactly() {
        #expect(ConsoleSessions.matches("abc", "abc"))
        #expect(!ConsoleSessions.matches("abd", "abc"))
        #expect(!ConsoleSessions.matches("ab", "abc"))
        #expect(!ConsoleSessions.matches(nil, "abc"))
        #expect(!ConsoleSessions.matches("", "abc"))
    }

    @Test(arguments: [
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("\"><img src=x onerror=alert(1)>", "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
        ("' onmouseover='x", "&#39; onmouseover=&#39;x"),
        ("a & b", "a &amp; b"),
        ("line\u{0}break\u{1B}", "line\u{FFFD}break\u{FFFD}"),
    ])
    func everyValueIsEscapedForTextAndAttributes(raw: String, escaped: String) {
        #expect(ConsoleHTML.escape(raw) == escaped)
    }
}
