import FleetwardPKI
import FleetwardRegistry
import Testing

@Suite struct AllowListParserTests {
    static let secret = "s3cr3t-0123456789abcdef"
    static let fingerprint = String(repeating: "ab", count: 32)

    func parse(_ text: String, chunk: Int = .max) -> (rows: [AllowListRow], errors: [AllowListRowError]) {
        var parser = AllowListParser()
        var rows: [AllowListRow] = []
        var errors: [AllowListRowError] = []
        let handle: (Result<AllowListRow, AllowListRowError>) -> Void = { result in
            switch result {
            case .success(let row): rows.append(row)
            case .failure(let error): errors.append(error)
            }
        }
        let bytes = Array(text.utf8)
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + chunk)
            parser.feed(bytes[start..<end], handle)
            start = end
        }
        parser.finish(handle)
        return (rows, errors)
    }

    @Test func readsRowsWithEitherProofAndMetadata() throws {
        let text = """
            id,secret,key_sha256,model,metadata
            D-1,\(Self.secret),,sensor,site=plant-1;batch=7
            D-2,,\(Self.fingerprint),"cam, v2",
            """
        let (rows, errors) = parse(text)
        #expect(errors.isEmpty, "\(errors)")
        #expect(rows.count == 2)
        #expect(
            rows[0]
                == AllowListRow(
                    line: 2, id: try DeviceID("D-1"), proof: .secret(Array(Self.secret.utf8)), model: "sensor",
                    metadata: ["site": "plant-1", "batch": "7"]))
        #expect(rows[1].proof == .publicKeySHA256([UInt8](repeating: 0xAB, count: 32)))
        #expect(rows[1].model == "cam, v2")
    }

    @Test func anyChunkingGivesTheSameResult() {
        let text =
            "id,secret,key_sha256,model\r\nD-1,\(Self.secret),,m\r\n\"D-2\",\"\(Self.secret)\",,\"a \"\"quoted\"\" model\"\r\nbad row\r\n"
        let whole = parse(text)
        #expect(whole.rows.count == 2)
        #expect(whole.rows[1].model == "a \"quoted\" model")
        #expect(whole.errors.map(\.line) == [4])
        for chunk in [1, 2, 3, 7, 64] {
            let chunked = parse(text, chunk: chunk)
            #expect(chunked.rows == whole.rows, "chunk \(chunk)")
            #expect(chunked.errors == whole.errors, "chunk \(chunk)")
        }
    }

    @Test func malformedRowsAreReportedWithTheirLineNumbers() {
        let text = """
            id,secret,key_sha256,model
            D-1,\(Self.secret),,m
            D 2,\(Self.secret),,m
            D-3,,,m
            D-4,\(Self.secret),\(Self.fingerprint),m
            D-5,short,,m
            D-6,,abc,m
            D-7,\(Self.secret),,
            D-8,\(Self.secret),m
            x' OR 1=1 --,\(Self.secret),,m
            D-10,\(Self.secret),,m
            """
        let (rows, errors) = parse(text)
        #expect(rows.map(\.id.rawValue) == ["D-1", "D-10"])
        #expect(errors.map(\.line) == [3, 4, 5, 6, 7, 8, 9, 10])
        #expect(errors[1].message.contains("an ID alone proves nothing"))
        #expect(errors[2].message.contains("not both"))
        #expect(errors[3].message.contains("16 to 256"))
        #expect(errors[6].message.contains("expected 4 columns, found 3"))
        #expect(!errors.contains { $0.message.contains(Self.secret) }, "a secret reached an error message")
    }

    @Test func theHeaderIsRequired() {
        let (rows, errors) = parse("D-1,\(Self.secret),,m\nD-2,\(Self.secret),,m\n")
        #expect(rows.isEmpty)
        #expect(errors.count == 1)
        #expect(errors.first?.line == 1)
        #expect(errors.first?.message.contains("header") == true)
        let empty = parse("")
        #expect(empty.errors.first?.message.contains("empty") == true)
    }

    @Test func overlongLinesAndUnclosedQuotesAreRefused() {
        let long = String(repeating: "x", count: AllowListParser.maximumLineBytes + 10)
        let (rows, errors) = parse("id,secret,key_sha256,model\nD-1,\(long),,m\nD-2,\(Self.secret),,m\n")
        #expect(rows.map(\.id.rawValue) == ["D-2"])
        #expect(errors.first?.message.contains("longer than") == true)
        let unclosed = parse("id,secret,key_sha256,model\nD-1,\"\(Self.secret),,m\n")
        #expect(unclosed.errors.first?.message.contains("not closed") == true)
    }

    @Test func columnsAreReadByNameInAnyOrderAndOptionalOnesMayBeLeftOut() {
        let (rows, errors) = parse("model,id,secret\nm,D-1,\(Self.secret)\n")
        #expect(errors.isEmpty, "\(errors)")
        #expect(rows.first?.id.rawValue == "D-1" && rows.first?.model == "m")
        #expect(rows.first?.proof == .secret(Array(Self.secret.utf8)))
        let keyed = parse("key_sha256,id,model,metadata\n\(String(repeating: "ab", count: 32)),D-2,cam,site=a\n")
        #expect(keyed.errors.isEmpty && keyed.rows.first?.metadata == ["site": "a"], "\(keyed.errors)")
    }

    @Test func unknownOrMissingColumnsAreFileLevelErrorsNamingThem() {
        let unknown = parse("id,secret,model,colour\nD-1,\(Self.secret),m,red\n")
        #expect(unknown.rows.isEmpty)
        #expect(unknown.errors.first?.isFileLevel == true)
        #expect(unknown.errors.first?.message.contains("'colour'") == true, "\(unknown.errors)")
        let missing = parse("id,secret\nD-1,\(Self.secret)\n")
        #expect(missing.errors.first?.message.contains("lacks model") == true, "\(missing.errors)")
    }

    @Test func aByteOrderMarkIsSkipped() {
        let (rows, errors) = parse("\u{FEFF}id,secret,key_sha256,model\nD-1,\(Self.secret),,m\n")
        #expect(errors.isEmpty, "\(errors)")
        #expect(rows.count == 1)
    }

    @Test func anIDTwiceInOneFileIsAnErrorNamingBothLines() {
        let (rows, errors) = parse("id,secret,key_sha256,model\nSN-300010,\(Self.secret),,m\nSN-300011,\(Self.secret),,m\nSN-300010,other-secret-000000001,,m\n")
        #expect(rows.map(\.id.rawValue) == ["SN-300010", "SN-300011"])
        #expect(errors.count == 1)
        #expect(errors.first?.line == 4)
        #expect(errors.first?.message.contains("line 2") == true, "\(errors)")
    }

    /// A file without a header, or with a secret in any field, never gets a secret echoed back.
    @Test func noErrorRepeatsAFieldThatCouldBeASecret() {
        let marker = "SECRETMARKER0123456789"
        let inputs = [
            "sn-100005,\(marker),,sensor\n",  // no header: the first row is read as one
            "id,secret,key_sha256,model\nD-1,\(marker),\(marker),m\n",
            "id,secret,key_sha256,model\nD 1,\(marker),,m\n",
            "id,secret,key_sha256,model\nD-1,\(marker),,\n",
            "id,secret,key_sha256,model,metadata\nD-1,\(marker),,m,\(marker)\n",
            "id,secret,key_sha256,model\nD-1,\(marker)\n",
            "\(marker),id,model\nx,D-1,m\n",
        ]
        for input in inputs {
            let (_, errors) = parse(input)
            #expect(!errors.isEmpty, "\(input)")
            for error in errors { #expect(!error.description.contains(marker), "\(error)") }
        }
    }
}

