import FleetwardKeyCustody
import FleetwardTestSupport
import Foundation
import Testing

@Suite struct AtomicFileTests {
    @Test func writesWithExactPermissionsAndLeavesNoTemporaryFiles() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let saved = umask(0)
        umask(0o022)
        defer { umask(saved) }
        try AtomicFile.write(Array("secret".utf8), to: dir.file("key"), permissions: 0o600)
        try AtomicFile.write(Array("public".utf8), to: dir.file("cert"), permissions: 0o644)
        #expect(AtomicFile.permissions(of: dir.file("key")) == 0o600)
        #expect(AtomicFile.permissions(of: dir.file("cert")) == 0o644)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["cert", "key"])
    }

    @Test func replacesExistingContentWhole() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try AtomicFile.write([UInt8](repeating: 1, count: 10_000), to: dir.file("f"), permissions: 0o600)
        try AtomicFile.write([2, 3], to: dir.file("f"), permissions: 0o600)
        #expect(try AtomicFile.read(dir.file("f")) == [2, 3])
    }

    @Test func failsClearlyInAMissingDirectory() throws {
        let error = #expect(throws: KeyCustodyError.self) {
            try AtomicFile.write([1], to: "/nonexistent-fleetward-dir/f", permissions: 0o600)
        }
        #expect(error?.code == .io)
        #expect(error?.message.contains("/nonexistent-fleetward-dir") == true)
    }

    @Test func readRefusesFilesOverTheLimit() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try dir.write("big", [UInt8](repeating: 0, count: 2048))
        let error = #expect(throws: KeyCustodyError.self) { try AtomicFile.read(dir.file("big"), limit: 1024) }
        #expect(error?.code == .io)
        let missing = #expect(throws: KeyCustodyError.self) { try AtomicFile.read(dir.file("absent")) }
        #expect(missing?.code == .notFound)
    }
}
