public import FleetwardMQTT
public import Foundation
import NIOCore
import X509

/// What ``DeviceAgent/runMQTT(interval:until:endpoint:telemetry:events:)`` reports as it goes.
public enum MQTTAgentEvent: Sendable {
    case connected(clientID: String)
    case published(topic: String, bytes: Int)
    case command(MQTTMessage)
    case disconnected(String)
    case renewed(serialHex: String, notAfter: Date)
    case retrying(String, afterSeconds: Double)
    /// A signed update offer arrived on `devices/<ID>/updates` and was installed.
    case updateInstalled(version: String, slot: String)
    /// An update offer was not taken (not genuine, another channel, or the gateway offers
    /// nothing newer now), or taking it failed; the reason says which.
    case updateNotTaken(String)
}

extension SignedMessage {
    /// The signed-message headers as MQTT 5.0 user properties, for `body` (the same signature
    /// the gateway checks on `POST /v1/telemetry`).
    public static func userProperties(for body: [UInt8], device: String, key: some DeviceSigningKey, now: Date = Date()) throws
        -> [(String, String)]
    {
        try headers(for: body, device: device, key: key, now: now).map { ($0.name, $0.value) }
    }
}

extension DeviceAgent {
    /// The topic the agent publishes telemetry on, and the one it takes commands from.
    public static func telemetryTopic(_ device: String) -> String { "devices/\(device)/telemetry" }
    public static func commandTopic(_ device: String) -> String { "devices/\(device)/commands" }
    /// Where Fleetward announces signed update offers, retained.
    public static func updatesTopic(_ device: String) -> String { "devices/\(device)/updates" }

    /// One long-lived MQTT session: subscribes to the device's commands (QoS 1), publishes signed
    /// telemetry (QoS 1, the signature as user properties) every `interval`, renews once two
    /// thirds of the certificate's lifetime has passed and reconnects with the new certificate
    /// into the same broker session (clean start off, an hour's session expiry), so commands sent
    /// meanwhile at QoS 1 are delivered then. Reconnects with exponential backoff and jitter.
    ///
    /// With an `updater`, it also takes update offers announced on `devices/<ID>/updates`: an offer
    /// is checked against the pinned root and the device's channel and accepted version first, and
    /// then the update is taken through the gateway as ``Updater/apply(on:now:events:)`` does (so
    /// the gateway, not the broker, decides what this device gets).
    ///
    /// Returns at `until` (nil: never). Throws when the device cannot go on by itself (the server
    /// is not the pinned one; the front door refuses it and EST refuses its renewal too).
    public func runMQTT(
        interval: Duration, until deadline: ContinuousClock.Instant? = nil, endpoint: ProvisioningConfig.Endpoint? = nil,
        telemetry: @Sendable () -> [UInt8], updater: Updater? = nil, events: @escaping @Sendable (MQTTAgentEvent) -> Void
    ) async throws {
        var backoff = Backoff(base: 1, cap: 300)
        var renewalBackoff = Backoff(base: 5, cap: 900)
        var nextRenewalAttempt = try renewalTime()
        var renewedSinceRefusal = false
        func timeLeft() -> Bool { deadline.map { ContinuousClock.now < $0 } ?? true }
        func pause(_ seconds: Double) async throws {
            var wait = Duration.milliseconds(Int64(seconds * 1000))
            if let deadline { wait = min(wait, max(.zero, deadline - ContinuousClock.now)) }
            try await Task.sleep(for: wait)
        }
        func renewNow() async throws {
            _ = try await renew()
            renewalBackoff.reset()
            nextRenewalAttempt = try renewalTime()
            if let leaf = try? operationalIdentity().chain.first {
                events(.renewed(serialHex: leaf.serialNumber.bytes.map { String(format: "%02x", $0) }.joined(), notAfter: leaf.notValidAfter))
            }
        }

        while timeLeft() {
            try Task.checkCancellation()
            if Date() >= nextRenewalAttempt {
                do {
                    try await renewNow()
                } catch let error as DeviceError where Self.isPermanent(error) {
                    throw error
                } catch {
                    let wait = renewalBackoff.next()
                    nextRenewalAttempt = Date().addingTimeInterval(wait)
                    events(.retrying("renewal failed: \(error)", afterSeconds: wait))
                }
            }
            let client: MQTTDeviceClient
            do {
                client = try await connectMQTT(endpoint: endpoint, cleanStart: false, sessionExpiry: 3600)
                let device = client.clientID
                let granted = try await client.subscribe([Self.commandTopic(device)], qos: 1)
                if let code = granted.first, code >= 0x80 {
                    await client.disconnect()
                    throw DeviceError(.refused, "the device's policy does not let it take commands on \(Self.commandTopic(device))")
                }
                if updater != nil, let code = try await client.subscribe([Self.updatesTopic(device)], qos: 1).first, code >= 0x80 {
                    events(.updateNotTaken("the device's policy does not let it take update offers on \(Self.updatesTopic(device))"))
                }
            } catch let error as DeviceError where error.code == .handshakeRefused && !renewedSinceRefusal {
                // The front door does not say why; EST does (suspended, revoked, stolen), or the
                // renewal mends a certificate the registry no longer has.
                renewedSinceRefusal = true
                do {
                    try await renewNow()
                    continue
                } catch let refusal as DeviceError where Self.isPermanent(refusal) {
                    throw DeviceError(.refused, "the MQTT front door refused this device, and \(refusal.message)", status: refusal.status)
                } catch {
                    let wait = backoff.next()
                    events(.retrying("\(error)", afterSeconds: wait))
                    try await pause(wait)
                    continue
                }
            } catch let error as DeviceError where Self.isPermanent(error) {
                throw error
            } catch {
                let wait = backoff.next()
                events(.retrying("\(error)", afterSeconds: wait))
                try await pause(wait)
                continue
            }
            backoff.reset()
            renewedSinceRefusal = false
            events(.connected(clientID: client.clientID))
            let updatesTopic = Self.updatesTopic(client.clientID)
            let commands = Task {
                for await message in client.messages {
                    if let updater, message.topic == updatesTopic {
                        await takeOffer(message.payload, updater: updater, events: events)
                    } else {
                        events(.command(message))
                    }
                }
            }
            let (_, _, key) = try operationalIdentity()
            var nextSend = ContinuousClock.now
            var renewalDue = false
            while timeLeft(), client.channel.isActive {
                if ContinuousClock.now >= nextSend {
                    let body = telemetry()
                    let topic = Self.telemetryTopic(client.clientID)
                    do {
                        let properties = try SignedMessage.userProperties(for: body, device: client.clientID, key: key)
                        try await client.publish(body, topic: topic, qos: 1, userProperties: properties)
                        events(.published(topic: topic, bytes: body.count))
                    } catch let error as DeviceError where error.code == .refused {
                        events(.disconnected("\(error.message)"))
                    } catch {
                        break
                    }
                    nextSend = ContinuousClock.now + interval
                }
                if Date() >= nextRenewalAttempt {
                    renewalDue = true
                    break
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
            let reason = await client.endReason
            if renewalDue {
                // Renew while the old session is still open (nothing is lost: the broker keeps
                // the session, and the new certificate reconnects into it).
                do {
                    try await renewNow()
                } catch let error as DeviceError where Self.isPermanent(error) {
                    await client.disconnect()
                    commands.cancel()
                    throw error
                } catch {
                    let wait = renewalBackoff.next()
                    nextRenewalAttempt = Date().addingTimeInterval(wait)
                    events(.retrying("renewal failed: \(error)", afterSeconds: wait))
                }
                await client.disconnect()
                _ = await commands.value
                continue
            }
            if client.channel.isActive {
                await client.disconnect()
            } else {
                events(.disconnected(reason ?? "the session ended"))
            }
            _ = await commands.value
            if timeLeft(), reason != nil { try await pause(backoff.next()) }
        }
    }

    /// Checks an announced offer and takes the update through the gateway.
    func takeOffer(_ payload: [UInt8], updater: Updater, events: @Sendable (MQTTAgentEvent) -> Void) async {
        // An empty retained message clears the offer (its release was halted).
        guard !payload.isEmpty else { return }
        do {
            guard let offer = try? JSONDecoder().decode(UpdateOffer.self, from: Data(payload)) else {
                throw DeviceError(.updateRejected, "the update offer is unreadable")
            }
            // The retained offer comes again at every reconnect: one already taken is no news.
            if offer.manifestVersion <= (try updater.acceptedVersion()) { return }
            _ = try updater.verify(offer)
            let connection = try await connect()
            defer { Task { await connection.close() } }
            switch try await updater.apply(on: connection) {
            case .installed(let version, let slot): events(.updateInstalled(version: version, slot: slot))
            case .upToDate: events(.updateNotTaken("the gateway offers nothing newer to this device now (release \(offer.version) announced)"))
            }
        } catch let error as DeviceError {
            events(.updateNotTaken(error.message))
        } catch {
            events(.updateNotTaken("\(error)"))
        }
    }
}
