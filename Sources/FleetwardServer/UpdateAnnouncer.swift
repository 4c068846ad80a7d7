import FleetwardAuthority
import FleetwardDevice
import FleetwardMQTT
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardRegistry
import Foundation
import Logging
import ServiceLifecycle

/// Tells devices over MQTT that a release is meant for them: when a release is published or
/// promoted, its signed offer (the document `GET /v1/updates` answers) is published, retained, on
/// `devices/{id}/updates` for every active device of its models that is in its rollout; when a
/// release is halted, the devices it was offered to get the release now offered to them instead,
/// or an empty retained message that clears the offer.
///
/// The message is a signed announcement, never an authority: the agent checks the signature
/// against its pinned root and then takes the update through the gateway as a polling device
/// would, so a halted release or a device no longer active gets nothing whatever the broker holds.
/// The manifest version announced last is kept in `DIR/mqtt/announced`, so a release promoted
/// while `serve` was stopped is announced at the next start; several nodes announce the same
/// messages, which the broker keeps once (retained).
struct UpdateAnnouncer: Service {
    static let clientIDPrefix = "fleetward-updates-"

    let catalog: UpdateCatalog
    let store: any RegistryStore
    let broker: MQTTBrokerEndpoint
    /// With a broker password, the announcer signs in as `fleetward-updates` with it.
    let brokerPassword: [UInt8]?
    let statePath: String
    let now: @Sendable () -> Date
    let logger: Logger
    var interval: Duration = .seconds(1)

    static func topic(_ device: String) -> String { "devices/\(device)/updates" }

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            var state = loadState()
            var client: MQTTDeviceClient?
            defer { if let client { Task { await client.disconnect() } } }
            while !Task.isCancelled {
                do {
                    let snapshot = try catalog.snapshot()
                    let newest = snapshot.releases.map(\.manifest.manifestVersion).max() ?? 0
                    let halted = Set(snapshot.releases.filter(\.halted).map(\.manifest.version))
                    let fresh = snapshot.releases.filter { $0.manifest.manifestVersion > state.announced && !$0.halted }
                    let newlyHalted = snapshot.releases.filter { halted.subtracting(state.halted).contains($0.manifest.version) }
                    if !fresh.isEmpty || !newlyHalted.isEmpty, let signer = snapshot.signerPEM {
                        if client?.isActive != true { client = try await connect() }
                        if let client {
                            let sent = try await announce(fresh: fresh, halted: newlyHalted, signer: signer, client: client)
                            logger.info(
                                "update offers published over MQTT",
                                metadata: ["releases": "\(Set((fresh + newlyHalted).map(\.manifest.version)).sorted())", "messages": "\(sent)"])
                        }
                    }
                    if newest != state.announced || halted != state.halted {
                        state = State(announced: newest, halted: halted)
                        try saveState(state)
                    }
                } catch is CancellationError {
                    return
                } catch {
                    // Tried again at the next tick: nothing is marked announced until it was.
                    logger.warning("update offers could not be published over MQTT; trying again", metadata: ["error": "\(error)"])
                    if let open = client { await open.disconnect() }
                    client = nil
                }
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// Publishes the offers; returns how many messages went out.
    func announce(fresh: [PublishedRelease], halted: [PublishedRelease], signer: String, client: MQTTDeviceClient) async throws -> Int {
        // A revoked release key offers nothing, whatever it signed (as on `GET /v1/updates`).
        if let serial = try catalog.snapshot().signerSerial, try await store.certificate(serial: serial)?.revocation != nil {
            logger.warning("the release signing certificate is revoked: no update offers are published", metadata: ["serial": "\(serial)"])
            return 0
        }
        var sent = 0
        let at = now()
        for release in fresh + halted {
            let manifest = release.manifest
            for model in manifest.models {
                var cursor: DeviceID?
                repeat {
                    let page = try await store.devices(matching: DeviceFilter(state: .active, model: model), after: cursor, limit: 1000)
                    cursor = page.count == 1000 ? page.last?.id : nil
                    for device in page
                    where UpdateCatalog.inRollout(device: device.id.rawValue, version: manifest.version, percent: manifest.rollout) {
                        let offered = try catalog.offer(device: device.id.rawValue, model: model, channel: manifest.channel, after: 0, now: at)
                        let payload: [UInt8]
                        if release.halted {
                            // What the device is offered now on this channel, or nothing.
                            payload = try offered.map { try JSONEncoder().encode(UpdateCatalog.document(for: $0, signerPEM: signer)) }.map(Array.init) ?? []
                        } else {
                            // Only the newest release for the device on its channel is announced.
                            guard offered?.manifest.manifestVersion == manifest.manifestVersion else { continue }
                            payload = Array(try JSONEncoder().encode(UpdateCatalog.document(for: release, signerPEM: signer)))
                        }
                        try await client.publish(payload, topic: Self.topic(device.id.rawValue), qos: 1, retain: true)
                        sent += 1
                    }
                } while cursor != nil
            }
        }
        return sent
    }

    func connect() async throws -> MQTTDeviceClient {
        let clientID = Self.clientIDPrefix + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        switch broker {
        // MQTT 3.1.1: every broker speaks it (RabbitMQ before 3.13 speaks nothing newer), and a
        // retained QoS 1 publish needs nothing from 5.0.
        case .unix(let path): return try await MQTTDeviceClient.connect(unixSocket: path, clientID: clientID, version: .v3_1_1)
        case .tcp(let host, let port):
            return try await MQTTDeviceClient.connect(
                brokerHost: host, port: port, clientID: clientID, username: brokerPassword == nil ? nil : "fleetward-updates",
                password: brokerPassword, version: .v3_1_1)
        }
    }

    struct State: Codable, Equatable {
        var announced: UInt64
        var halted: Set<String>
    }

    /// Nothing recorded yet: every current release is announced once.
    func loadState() -> State {
        guard let bytes = try? AtomicFile.read(statePath, limit: 1 << 20), let state = try? JSONDecoder().decode(State.self, from: Data(bytes))
        else { return State(announced: 0, halted: []) }
        return state
    }

    func saveState(_ state: State) throws {
        try AtomicFile.makeDirectory((statePath as NSString).deletingLastPathComponent)
        try AtomicFile.write(Array(try JSONEncoder().encode(state)), to: statePath, permissions: 0o600)
    }
}
