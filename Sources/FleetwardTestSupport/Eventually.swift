public import Foundation

/// Waits for a condition instead of sleeping a fixed time: checks `condition` every `interval`
/// until it holds or `timeout` has passed, and returns whether it held (a test then expects it).
///
/// For changes that reach another process after a delay the product bounds (a revocation reaches
/// the gateway within a second): the test passes as soon as the change is seen and fails, naming
/// what it waited for, only when the bound is clearly broken.
public func eventually(
    timeout: TimeInterval = 10, interval: TimeInterval = 0.05, _ condition: () throws -> Bool
) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if try condition() { return true }
        if Date() >= deadline { return false }
        Thread.sleep(forTimeInterval: interval)
    }
}
