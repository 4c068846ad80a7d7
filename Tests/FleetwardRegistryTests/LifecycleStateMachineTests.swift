import FleetwardRegistry
import Testing

@Suite struct LifecycleStateMachineTests {
    typealias Event = LifecycleStateMachine.Event
    let admin = Actor(role: .admin, name: "t-admin")

    /// Every (state, event) pair an admin may ask for, and where it leads; nil means illegal.
    static let table: [DeviceState: [Event: DeviceState]] = [
        .allowed: [.activate: .active, .revoke: .revoked, .reportStolen: .stolen],
        .pending: [.approve: .active, .revoke: .revoked, .reportStolen: .stolen],
        .active: [.activate: .active, .suspend: .suspended, .revoke: .revoked, .reportStolen: .stolen],
        .suspended: [.resume: .active, .revoke: .revoked, .reportStolen: .stolen],
        .revoked: [:],
        .stolen: [.recover: .active, .revoke: .revoked],
    ]

    @Test func everyStateAndEventFollowsTheTable() throws {
        for state in DeviceState.allCases {
            for event in Event.allCases {
                let expected = Self.table[state]?[event]
                if let expected {
                    #expect(
                        try LifecycleStateMachine.next(from: state, on: event, by: admin, deviceOwner: nil) == expected, "\(state) \(event)"
                    )
                } else {
                    let error = #expect(throws: RegistryError.self, "\(state) \(event)") {
                        try LifecycleStateMachine.next(from: state, on: event, by: admin, deviceOwner: nil)
                    }
                    #expect(error?.code == .illegalTransition)
                    #expect(error?.message.contains("from \(state) to ") == true, "\(error?.message ?? "")")
                }
            }
        }
    }

    @Test func revokedIsFinalAndNamesBothStates() {
        let error = #expect(throws: RegistryError.self) {
            try LifecycleStateMachine.next(from: .revoked, on: .resume, by: admin, deviceOwner: nil)
        }
        #expect(error?.message == "a device cannot go from revoked to active (resume)")
    }

    @Test func onlyTheOwnerOrAnAdminRecoversAStolenDevice() throws {
        let owner = Actor(role: .owner, name: "t1", owner: "alice")
        let otherOwner = Actor(role: .owner, name: "t2", owner: "bob")
        let operatorActor = Actor(role: .operator, name: "t3")
        #expect(try LifecycleStateMachine.next(from: .stolen, on: .recover, by: owner, deviceOwner: "alice") == .active)
        #expect(try LifecycleStateMachine.next(from: .stolen, on: .recover, by: admin, deviceOwner: "alice") == .active)
        for actor in [otherOwner, operatorActor, Actor(role: .manufacturer, name: "m")] {
            let error = #expect(throws: RegistryError.self) {
                try LifecycleStateMachine.next(from: .stolen, on: .recover, by: actor, deviceOwner: "alice")
            }
            #expect(error?.code == .forbidden, "\(actor)")
        }
        // An owner of an unowned device cannot report it stolen.
        let unowned = #expect(throws: RegistryError.self) {
            try LifecycleStateMachine.next(from: .active, on: .reportStolen, by: owner, deviceOwner: nil)
        }
        #expect(unowned?.code == .forbidden)
    }

    @Test func rolesAreCheckedBeforeStates() {
        let manufacturer = Actor(role: .manufacturer, name: "m")
        for event in [Event.suspend, .resume, .revoke, .approve, .activate] {
            let error = #expect(throws: RegistryError.self) {
                try LifecycleStateMachine.next(from: .active, on: event, by: manufacturer, deviceOwner: nil)
            }
            #expect(error?.code == .forbidden, "\(event)")
        }
        let owner = Actor(role: .owner, name: "o", owner: "alice")
        let error = #expect(throws: RegistryError.self) {
            try LifecycleStateMachine.next(from: .active, on: .suspend, by: owner, deviceOwner: "alice")
        }
        #expect(error?.code == .forbidden)
    }
}
