/// A single-producer, single-consumer queue of at most `capacity` elements with backpressure:
/// ``send(_:)`` waits while the queue is full, ``next()`` waits while it is empty.
///
/// Lets the allow-list import parse and hash on one core while SQLite writes on the other.
actor BoundedQueue<Element: Sendable> {
    private var buffer: [Element] = []
    private let capacity: Int
    private var finished = false
    private var failure: (any Error)?
    private var waitingConsumer: CheckedContinuation<Void, Never>?
    private var waitingProducer: CheckedContinuation<Void, Never>?

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    /// Adds `element`, waiting while the queue is full. Returns false once the consumer has stopped.
    @discardableResult
    func send(_ element: Element) async -> Bool {
        while buffer.count >= capacity && !finished {
            await withCheckedContinuation { waitingProducer = $0 }
        }
        guard !finished else { return false }
        buffer.append(element)
        wakeConsumer()
        return true
    }

    /// Ends the stream, with an error when the producer failed.
    func finish(throwing error: (any Error)? = nil) {
        finished = true
        failure = failure ?? error
        wakeConsumer()
        wakeProducer()
    }

    /// The next element, nil at the end; rethrows the producer's error.
    func next() async throws -> Element? {
        while buffer.isEmpty && !finished {
            await withCheckedContinuation { waitingConsumer = $0 }
        }
        if let failure { throw failure }
        guard !buffer.isEmpty else { return nil }
        let element = buffer.removeFirst()
        wakeProducer()
        return element
    }

    private func wakeConsumer() {
        waitingConsumer?.resume()
        waitingConsumer = nil
    }

    private func wakeProducer() {
        waitingProducer?.resume()
        waitingProducer = nil
    }
}
