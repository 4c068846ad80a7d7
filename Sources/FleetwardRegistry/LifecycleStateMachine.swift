/// The device lifecycle, enforced in one place.
///
/// ```
/// allowed ──activate──▶ active ◀──resume── suspended
///    │                   │  ▲ └──suspend──▶    │
///    │ (group)           │  └───approve─ pending
///    ▼                   ▼
/// any state ──revoke──▶ revoked (final)
/// any but revoked ──reportStolen──▶ stolen ──recover (owner or admin)──▶ the state before the theft
/// ```
/// Every method is a pure function of the current state, the event and who asks; it returns the
/// new state or throws ``RegistryError`` naming both states (or the missing right).
public enum LifecycleStateMachine {
    /// What happens to a device.
    public enum Event: String, Sendable, CaseIterable, CustomStringConvertible {
        /// A successful enrollment (or re-enrollment) gives it an operational certificate.
        case activate
        /// An operator approves a pending device.
        case approve
        case suspend
        case resume
        case revoke
        case reportStolen = "report-stolen"
        case recover

        public var description: String { rawValue }
    }

    /// The roles allowed to cause `event` (ownership is checked separately for owners).
    public static func roles(for event: Event) -> Set<Role> {
        switch event {
        case .activate: [.admin, .operator]
        case .approve, .suspend, .resume, .revoke: [.admin, .operator]
        case .reportStolen, .recover: [.admin, .owner]
        }
    }

    /// The state after `event`, or an error.
    ///
    /// - Parameters:
    ///   - state: The device's current state.
    ///   - event: What is asked.
    ///   - actor: Who asks.
    ///   - deviceOwner: The device's owner, for owner-only events.
    ///   - stateBeforeTheft: For `recover`: the state the device was in when reported stolen. A
    ///     recovered device returns to it (so a theft report cannot lift a suspension or skip an
    ///     approval); `active` when unknown.
    /// - Throws: ``RegistryError`` `forbidden` when the actor may not, `illegalTransition` when the
    ///   lifecycle does not allow it.
    public static func next(
        from state: DeviceState, on event: Event, by actor: Actor, deviceOwner: String?, stateBeforeTheft: DeviceState? = nil
    ) throws -> DeviceState {
        guard roles(for: event).contains(actor.role) else {
            throw RegistryError(.forbidden, "role \(actor.role) may not \(event) a device")
        }
        if actor.role == .owner {
            guard let owner = actor.owner, owner == deviceOwner else {
                throw RegistryError(.forbidden, "only the device's owner may \(event) it")
            }
        }
        let target: DeviceState?
        switch (event, state) {
        case (.activate, .allowed), (.activate, .active): target = .active
        case (.approve, .pending): target = .active
        case (.suspend, .active): target = .suspended
        case (.resume, .suspended): target = .active
        case (.revoke, let current) where current != .revoked: target = .revoked
        case (.reportStolen, let current) where current != .revoked && current != .stolen: target = .stolen
        case (.recover, .stolen):
            switch stateBeforeTheft {
            case .allowed, .pending, .suspended: target = stateBeforeTheft
            default: target = .active
            }
        default: target = nil
        }
        guard let target else {
            let wanted = intendedState(of: event)
            throw RegistryError(.illegalTransition, "a device cannot go from \(state) to \(wanted) (\(event))")
        }
        return target
    }

    /// RFC 5280 §5.3.1 reason for the certificates of a device leaving service: keyCompromise
    /// when stolen, cessationOfOperation when decommissioned; nil when `event` revokes nothing.
    public static func revocationReason(for event: Event) -> RevocationReason? {
        switch event {
        case .reportStolen: .keyCompromise
        case .revoke: .cessationOfOperation
        default: nil
        }
    }

    static func intendedState(of event: Event) -> DeviceState {
        switch event {
        case .activate, .approve, .resume, .recover: .active
        case .suspend: .suspended
        case .revoke: .revoked
        case .reportStolen: .stolen
        }
    }
}
