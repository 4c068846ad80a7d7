import Testing

extension Tag {
    /// Tests that run the `fleetward` and `fleetward-agent` binaries and real peers (openssl,
    /// curl, nginx, sqlite3): seconds each. `swift test --skip FleetwardCLITests` leaves them out.
    @Tag static var slow: Self
}
