import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing

@testable import FleetwardServer

/// The device listeners' HTTP/1.1 connection: the state machine alone, then the handler on an
/// in-memory channel with raw bytes in and out (no socket, no TLS).
@Suite struct DeviceConnectionStateMachineTests {
    static func head(_ uri: String, method: HTTPMethod = .GET, headers: HTTPHeaders = [:], keepAlive: Bool = true) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)
        if !keepAlive { head.headers.add(name: "connection", value: "close") }
        return head
    }

    @Test func pipelinedRequestsWaitTheirTurnAndHoldReads() {
        var machine = DeviceConnectionStateMachine(bodyLimit: 16)
        _ = machine.receivedHead(Self.head("/a"))
        guard case .respond(let first, false) = machine.receivedEnd() else { Issue.record("the first request is not answered"); return }
        #expect(first.head.uri == "/a")
        _ = machine.receivedHead(Self.head("/b"))
        guard case .none = machine.receivedEnd() else { Issue.record("the second request did not wait"); return }
        guard case .none = machine.readRequested() else { Issue.record("reading went on while a request waits"); return }
        guard case .respond(let second, true) = machine.answerWritten(failed: false) else {
            Issue.record("the waiting request is not answered next, with the held read")
            return
        }
        #expect(second.head.uri == "/b")
        guard case .none = machine.answerWritten(failed: false) else { Issue.record("something after the last answer"); return }
        #expect(machine.isIdle)
    }

    @Test func aContinueAskedForWhileAnAnswerIsMadeWaitsForItsEnd() {
        var machine = DeviceConnectionStateMachine(bodyLimit: 16)
        _ = machine.receivedHead(Self.head("/a"))
        _ = machine.receivedEnd()
        let expecting = Self.head("/b", method: .POST, headers: ["expect": "100-continue", "content-length": "3"])
        guard case .none = machine.receivedHead(expecting) else { Issue.record("100 Continue inside another answer"); return }
        guard case .sendContinue(.http1_1) = machine.answerWritten(failed: false) else {
            Issue.record("100 Continue did not follow the end of the answer before it")
            return
        }
        machine.receivedBody(ByteBuffer(string: "abc"))
        guard case .respond(let received, false) = machine.receivedEnd() else { Issue.record("the request is not answered"); return }
        #expect(String(buffer: received.body) == "abc")
    }

    @Test func aContinueOnAnIdleConnectionGoesAtOnce() {
        var machine = DeviceConnectionStateMachine(bodyLimit: 16)
        guard case .sendContinue = machine.receivedHead(Self.head("/b", method: .POST, headers: ["Expect": "100-Continue"])) else {
            Issue.record("no 100 Continue")
            return
        }
    }

    @Test func anOversizedBodyKeepsOneByteMoreAndClosesAfterItsAnswer() {
        var machine = DeviceConnectionStateMachine(bodyLimit: 4)
        _ = machine.receivedHead(Self.head("/big", method: .POST))
        machine.receivedBody(ByteBuffer(string: "abc"))
        machine.receivedBody(ByteBuffer(string: "defgh"))
        guard case .respond(let received, _) = machine.receivedEnd() else { Issue.record("not answered"); return }
        #expect(received.body.readableBytes == 5)
        #expect(received.closeAfter)
        _ = machine.receivedHead(Self.head("/after"))
        guard case .none = machine.receivedEnd() else { Issue.record("a request after the closing one was taken"); return }
        guard case .close(belowTLS: false) = machine.answerWritten(failed: false) else { Issue.record("did not close"); return }
    }

    @Test func aHalfClosedClientIsAnsweredThenClosedBelowTLS() {
        var machine = DeviceConnectionStateMachine(bodyLimit: 16)
        _ = machine.receivedHead(Self.head("/a"))
        _ = machine.receivedEnd()
        guard case .none = machine.inputClosed() else { Issue.record("closed before the answer"); return }
        guard case .close(belowTLS: true) = machine.answerWritten(failed: false) else { Issue.record("did not close"); return }
        var idle = DeviceConnectionStateMachine(bodyLimit: 16)
        guard case .close(belowTLS: true) = idle.inputClosed() else { Issue.record("an idle connection stayed"); return }
    }

    @Test func garbageAfterAPipelinedRequestIsRefusedInItsTurn() {
        var machine = DeviceConnectionStateMachine(bodyLimit: 16)
        _ = machine.receivedHead(Self.head("/a"))
        _ = machine.receivedEnd()
        guard case .none = machine.receivedMalformed() else { Issue.record("refused before the earlier answer"); return }
        guard case .refuseMalformed = machine.answerWritten(failed: false) else { Issue.record("not refused in its turn"); return }
        guard case .close = machine.answerWritten(failed: true) else { Issue.record("did not close after the 400"); return }
    }
}

/// The handler on an in-memory channel: the bytes a client would see.
@Suite struct DeviceHTTPHandlerTests {
    /// Answers `/now` at once, `/slow` after ``release()``, `/stream` with a body in pieces after
    /// ``release()``; any other path 404; echoes POST bodies' sizes.
    final class Responder: DeviceHTTPResponder {
        private let gate = Mutex<[CheckedContinuation<Void, Never>]>([])
        private let opened = Mutex(false)

        func release() {
            let waiting = gate.withLock { waiting in
                opened.withLock { $0 = true }
                defer { waiting.removeAll() }
                return waiting
            }
            for continuation in waiting { continuation.resume() }
        }

        private func waitForRelease() async {
            await withCheckedContinuation { continuation in
                let open = gate.withLock { waiting -> Bool in
                    if opened.withLock({ $0 }) { return true }
                    waiting.append(continuation)
                    return false
                }
                if open { continuation.resume() }
            }
        }

        func answerNow(_ request: DeviceHTTPRequest) -> DeviceHTTPAnswer? {
            switch request.path {
            case "/now": .complete(.ok, headers: ["content-type": "text/plain"], body: ByteBuffer(string: "now"))
            case "/post":
                request.body.readableBytes > 8
                    ? .complete(.payloadTooLarge, headers: [:], body: ByteBuffer(string: "too large"))
                    : .complete(.ok, headers: [:], body: ByteBuffer(string: "got \(request.body.readableBytes)"))
            case "/slow", "/stream": nil
            default: .complete(.notFound, headers: [:], body: ByteBuffer(string: "no"))
            }
        }

        func answer(_ request: DeviceHTTPRequest) async -> DeviceHTTPAnswer {
            await waitForRelease()
            if request.path == "/stream" {
                let body = ResponseBody { writer in
                    for piece in ["one,", "two,", "three"] { try await writer.write(ByteBuffer(string: piece)) }
                    try await writer.finish(nil)
                }
                return .response(Response(status: .ok, headers: [:], body: body))
            }
            return .complete(.ok, headers: [:], body: ByteBuffer(string: "slow"))
        }
    }

    func makeChannel(_ responder: Responder, bodyLimit: Int = 8) async throws -> NIOAsyncTestingChannel {
        let channel = NIOAsyncTestingChannel()
        try await channel.eventLoop.submit {
            try DeviceHTTPChannel.configure(
                channel.pipeline.syncOperations, responder: responder, bodyLimit: bodyLimit, logger: Logger(label: "test"))
        }.get()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        return channel
    }

    /// Everything written to the client so far, waiting (bounded) until it contains `marker`.
    func output(_ channel: NIOAsyncTestingChannel, until marker: String, soFar: inout String) async throws -> String {
        let deadline = ContinuousClock.now + .seconds(10)
        while !soFar.contains(marker), ContinuousClock.now < deadline {
            if let buffer = try await channel.readOutbound(as: ByteBuffer.self) {
                soFar += String(buffer: buffer)
            } else {
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        return soFar
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let responder = Responder()
        let channel = try await makeChannel(responder)
        try await channel.writeInbound(ByteBuffer(string: "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /now HTTP/1.1\r\nHost: x\r\n\r\n"))
        var text = ""
        try await Task.sleep(for: .milliseconds(50))
        while let buffer = try await channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        #expect(text.isEmpty, "the second answer overtook the first: \(text)")
        responder.release()
        text = try await output(channel, until: "now", soFar: &text)
        let slow = try #require(text.range(of: "slow"))
        let now = try #require(text.range(of: "\r\n\r\nnow"))
        #expect(slow.lowerBound < now.lowerBound)
        #expect(text.components(separatedBy: "HTTP/1.1 200 OK").count == 3)
        _ = try? await channel.finish()
    }

    @Test func aContinueWaitsWhileAnEarlierAnswerStreams() async throws {
        let responder = Responder()
        let channel = try await makeChannel(responder)
        try await channel.writeInbound(
            ByteBuffer(
                string: "GET /stream HTTP/1.1\r\nHost: x\r\n\r\nPOST /post HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
            ))
        try await Task.sleep(for: .milliseconds(50))
        var text = ""
        while let buffer = try await channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        #expect(!text.contains("100 Continue"), "100 Continue was written before the streamed answer: \(text)")
        responder.release()
        text = try await output(channel, until: "100 Continue", soFar: &text)
        let streamed = try #require(text.range(of: "three"))
        let interim = try #require(text.range(of: "100 Continue"))
        #expect(streamed.upperBound <= interim.lowerBound, "100 Continue landed inside the streamed answer: \(text)")
        try await channel.writeInbound(ByteBuffer(string: "abc"))
        text = try await output(channel, until: "got 3", soFar: &text)
        #expect(text.contains("got 3"))
        _ = try? await channel.finish()
    }

    @Test func headGetsTheHeadersAndNoBody() async throws {
        let channel = try await makeChannel(Responder())
        try await channel.writeInbound(ByteBuffer(string: "HEAD /now HTTP/1.1\r\nHost: x\r\n\r\n"))
        var text = ""
        text = try await output(channel, until: "\r\n\r\n", soFar: &text)
        #expect(text.hasPrefix("HTTP/1.1 200 OK"))
        #expect(text.lowercased().contains("content-length: 3"))
        #expect(text.hasSuffix("\r\n\r\n"), "HEAD got a body: \(text)")
        _ = try? await channel.finish()
    }

    @Test func anOversizedBodyIsRefusedAndTheConnectionCloses() async throws {
        let channel = try await makeChannel(Responder(), bodyLimit: 8)
        try await channel.writeInbound(ByteBuffer(string: "POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n01234567890123456789"))
        var text = ""
        text = try await output(channel, until: "too large", soFar: &text)
        #expect(text.hasPrefix("HTTP/1.1 413"))
        #expect(text.lowercased().contains("connection: close"))
        try await channel.closeFuture.get()
    }

    @Test func aMalformedRequestGets400AndTheConnectionCloses() async throws {
        let channel = try await makeChannel(Responder())
        try? await channel.writeInbound(ByteBuffer(string: "this is not HTTP\r\n\r\n"))
        var text = ""
        text = try await output(channel, until: "\r\n\r\n", soFar: &text)
        #expect(text.hasPrefix("HTTP/1.1 400"))
        #expect(text.lowercased().contains("connection: close"))
        try await channel.closeFuture.get()
    }

    @Test func aClientThatClosesItsSideGetsItsAnswerThenTheConnectionEnds() async throws {
        let responder = Responder()
        let channel = try await makeChannel(responder)
        try await channel.writeInbound(ByteBuffer(string: "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        try await Task.sleep(for: .milliseconds(20))
        #expect(channel.isActive, "closed before answering")
        responder.release()
        var text = ""
        text = try await output(channel, until: "slow", soFar: &text)
        #expect(text.hasPrefix("HTTP/1.1 200 OK"))
        try await channel.closeFuture.get()
    }
}
