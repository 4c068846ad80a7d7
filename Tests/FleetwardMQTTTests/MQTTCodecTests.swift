import FleetwardMQTT
import NIOCore
import Testing

/// The MQTT codec: frames split from any chunking, bounded before allocation, and the packets
/// policy needs read and written back byte for byte.
@Suite struct MQTTCodecTests {
    static func frames(_ bytes: [UInt8], maximum: Int = 1024) throws -> [MQTTFrame] {
        var buffer = ByteBuffer(bytes: bytes)
        var frames: [MQTTFrame] = []
        while let frame = try MQTTFrameDecoder.frame(from: &buffer, maximumPacketSize: maximum) { frames.append(frame) }
        return frames
    }

    @Test func framesComeWholeFromAnyChunking() throws {
        let publish = MQTTPublish.frame(topic: "devices/D-1/t", payload: Array("hello".utf8), qos: 1, packetID: 7, version: .v5)
        let ping = MQTTFrame(type: .pingreq)
        var wire = publish.encoded
        var second = ping.encoded
        wire.writeBuffer(&second)
        let bytes = Array(wire.readableBytesView)
        // Every split point: nothing is decoded before a frame is whole, and the rest stays buffered.
        for split in 0...bytes.count {
            var buffer = ByteBuffer(bytes: bytes[..<split])
            var decoded: [MQTTFrame] = []
            while let frame = try MQTTFrameDecoder.frame(from: &buffer, maximumPacketSize: 1024) { decoded.append(frame) }
            buffer.writeBytes(bytes[split...])
            while let frame = try MQTTFrameDecoder.frame(from: &buffer, maximumPacketSize: 1024) { decoded.append(frame) }
            #expect(decoded == [publish, ping], "split at \(split)")
        }
    }

    @Test func oversizedAndMalformedFramesAreRefusedFromTheirHeader() throws {
        // Remaining length 268,435,455 announced in 4 bytes: refused without waiting for the body.
        #expect(throws: MQTTError(.packetTooLarge, "")) { _ = try Self.frames([0x30, 0xFF, 0xFF, 0xFF, 0x7F]) }
        // A fifth length byte.
        #expect(throws: MQTTError(.malformedPacket, "")) { _ = try Self.frames([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]) }
        // Type 0 does not exist; SUBSCRIBE must carry flags 0b0010; QoS 3.
        #expect(throws: MQTTError(.malformedPacket, "")) { _ = try Self.frames([0x00, 0x00]) }
        #expect(throws: MQTTError(.malformedPacket, "")) { _ = try Self.frames([0x80, 0x00]) }
        #expect(throws: MQTTError(.malformedPacket, "")) { _ = try Self.frames([0x36, 0x00]) }
    }

    @Test func connectIsReadAndWrittenBackTheSame() throws {
        for version in [MQTTVersion.v3_1_1, .v5] {
            let connect = MQTTConnect(
                version: version, clientID: "D-1", cleanStart: false, keepAlive: 30,
                properties: version == .v5 ? MQTTProperties([(MQTTProperties.receiveMaximum, .twoBytes(10))]) : MQTTProperties(),
                will: MQTTConnect.Will(topic: "devices/D-1/status", payload: Array("gone".utf8), qos: 1, retain: true),
                username: "someone", password: Array("secret".utf8))
            let read = try MQTTConnect(connect.frame)
            #expect(read == connect)
            #expect(MQTTConnect.requestedLevel(connect.frame) == version.rawValue)
        }
        // MQTT 3.1 (MQIsdp) and other levels are refused as unsupported.
        var old = ByteBuffer()
        old.writeInteger(UInt16(6))
        old.writeString("MQIsdp")
        old.writeInteger(UInt8(3))
        #expect(throws: MQTTError(.unsupportedProtocolVersion, "")) { _ = try MQTTConnect(MQTTFrame(type: .connect, body: old)) }
    }

    @Test func subscribeAndSubAckRoundTrip() throws {
        let subscribe = MQTTSubscribe(packetID: 9, filters: [("devices/D-1/#", 1), ("models/cam/+", 0)])
        #expect(try MQTTSubscribe(subscribe.frame(version: .v5), version: .v5) == subscribe)
        #expect(try MQTTSubscribe(subscribe.frame(version: .v3_1_1), version: .v3_1_1) == subscribe)
        let suback = MQTTSubAck(packetID: 9, codes: [1, 0x87])
        #expect(try MQTTSubAck(suback.frame(version: .v5), version: .v5) == suback)
    }

    @Test func unknownPropertiesAndBadStringsAreMalformed() throws {
        var body = ByteBuffer()
        body.writeInteger(UInt16(3))
        body.writeString("a/b")
        body.writeBytes([0x02, 0x7F, 0x00])  // property length 2: id 0x7F does not exist
        #expect(throws: MQTTError(.malformedPacket, "")) { _ = try MQTTPublish(MQTTFrame(type: .publish, body: body), version: .v5) }
        var bad = ByteBuffer()
        bad.writeInteger(UInt16(2))
        bad.writeBytes([0xC3, 0x28])  // not UTF-8
        #expect(throws: MQTTError(.malformedPacket, "")) { _ = try MQTTPublish(MQTTFrame(type: .publish, body: bad), version: .v3_1_1) }
    }
}

/// Topic filters: matching, covering (a subscription within an allowed filter) and overlap.
@Suite struct TopicFilterTests {
    func filter(_ text: String) -> TopicFilter { TopicFilter(text)! }

    @Test func filtersParseAsMQTTSays() {
        for valid in ["#", "+", "a/#", "a/+/c", "/a", "a//b", "+/+", "sport/tennis/#"] { #expect(TopicFilter(valid) != nil, "\(valid)") }
        for invalid in ["", "a/#/b", "a#", "a+/b", "a/b#", "#/a"] { #expect(TopicFilter(invalid) == nil, "\(invalid)") }
        #expect(TopicFilter.isValidTopicName("devices/D-1/t"))
        for name in ["", "a/+", "a/#", "a\u{0}b"] { #expect(!TopicFilter.isValidTopicName(name), "\(name)") }
    }

    @Test func matching() {
        #expect(filter("sport/tennis/#").matches("sport/tennis"))
        #expect(filter("sport/tennis/#").matches("sport/tennis/player1/ranking"))
        #expect(filter("sport/+/player1").matches("sport/tennis/player1"))
        #expect(!filter("sport/+").matches("sport/tennis/player1"))
        #expect(filter("+/+").matches("/finance"))
        #expect(!filter("#").matches("$SYS/broker"))
        #expect(filter("$SYS/#").matches("$SYS/broker"))
        #expect(!filter("+/broker").matches("$SYS/broker"))
        #expect(!filter("sport/+").matches("sport"))
        #expect(filter("sport/+").matches("sport/"))
        #expect(!filter("sport/tennis").matches("sport/tennis/"))
        #expect(!filter("sport/tennis").matches("sport/tenni"))
        #expect(!filter("sport/tenni").matches("sport/tennis"))
        #expect(filter("+").matches("") == true && !filter("+").matches("a/b"))
        // Byte for byte (§4.7.3): a decomposed é is another topic than the precomposed one.
        #expect(filter("devices/caf\u{E9}/#").matches("devices/caf\u{E9}/t"))
        #expect(!filter("devices/caf\u{E9}/#").matches("devices/cafe\u{301}/t"))
        #expect(!filter("devices/caf\u{E9}/#").covers(filter("devices/cafe\u{301}/#")))
    }

    @Test func coveringAndOverlap() {
        let allowed = filter("devices/D-1/#")
        #expect(allowed.covers(filter("devices/D-1/#")))
        #expect(allowed.covers(filter("devices/D-1/+/x")))
        #expect(allowed.covers(filter("devices/D-1")))
        #expect(!allowed.covers(filter("devices/+/#")))
        #expect(!allowed.covers(filter("devices/#")))
        #expect(!allowed.covers(filter("#")))
        #expect(!filter("devices/+/status").covers(filter("devices/#")))
        #expect(filter("devices/+/status").covers(filter("devices/D-1/status")))
        #expect(!filter("#").covers(filter("$SYS/#")))
        #expect(filter("a/+").overlaps(filter("+/b")))
        #expect(filter("a").overlaps(filter("a/#")))
        #expect(!filter("a/b").overlaps(filter("a/c")))
        #expect(!filter("a/b/c").overlaps(filter("a/+")))
    }
}
