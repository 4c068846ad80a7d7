import FleetwardKeyCustody
import FleetwardPKCS11
import Foundation

/// Where the passphrase comes from: `FLEETWARD_PASSPHRASE`, else a prompt on the terminal with echo off.
enum PassphraseSource {
    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    /// Reads the passphrase; when `confirm`, a prompt asks twice and the answers must match.
    static func read(purpose: String, confirm: Bool) throws -> Passphrase {
        if let value = ProcessInfo.processInfo.environment["FLEETWARD_PASSPHRASE"] {
            guard !value.isEmpty else {
                throw Unavailable(description: "FLEETWARD_PASSPHRASE is set but empty")
            }
            return Passphrase(value)
        }
        let first = try prompt("Passphrase \(purpose): ")
        if confirm {
            let second = try prompt("Repeat the passphrase: ")
            guard first.bytes == second.bytes else {
                throw Unavailable(description: "the two passphrases differ")
            }
        }
        return first
    }

    private static func prompt(_ text: String) throws -> Passphrase {
        guard let typed = TerminalPrompt.readSecret(text) else {
            throw Unavailable(description: "no passphrase: set FLEETWARD_PASSPHRASE or run on a terminal")
        }
        return Passphrase(String(decoding: typed, as: UTF8.self))
    }
}
