import FleetwardTestSupport
import Foundation
import Testing

/// Debian's nginx as a test's own process (never the system service): one `server` block on a
/// free loopback port, everything under the test's directory, killed by its PID at the end.
final class NginxProcess {
    let process: Process
    let port: Int
    let directory: String

    var errorLog: String { (try? String(contentsOfFile: directory + "/error.log", encoding: .utf8)) ?? "" }

    /// Starts nginx with `server` (the body of a `server {}` block; `PORT` is replaced by the port).
    init(in parent: TemporaryDirectory, server: String) throws {
        guard let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw Tool.Missing(description: "nginx is not installed (scripts/test.sh installs it)")
        }
        directory = parent.file("nginx")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let directory = self.directory
        do {
            // nginx keeps retrying a busy port for 2.5 s before it gives up: it is ready only once
            // it holds the port itself.
            (process, port) = try Listening.start("nginx") { candidate in
                let config = """
                    daemon off;
                    master_process off;
                    pid \(directory)/nginx.pid;
                    error_log \(directory)/error.log info;
                    events { worker_connections 64; }
                    http {
                        access_log off;
                        client_body_temp_path \(directory)/body;
                        proxy_temp_path \(directory)/proxy;
                        fastcgi_temp_path \(directory)/fastcgi;
                        uwsgi_temp_path \(directory)/uwsgi;
                        scgi_temp_path \(directory)/scgi;
                        server {
                    \(server.replacingOccurrences(of: "PORT", with: "\(candidate)"))
                        }
                    }

                    """
                try config.write(toFile: directory + "/nginx.conf", atomically: true, encoding: .utf8)
                return (nginx, ["-c", directory + "/nginx.conf", "-p", directory])
            }
        } catch {
            throw Tool.TimedOut(
                description: "nginx did not start: \((try? String(contentsOfFile: directory + "/error.log", encoding: .utf8)) ?? "")")
        }
    }

    deinit { stop() }

    /// SIGKILL by PID: a child launched from a dispatch worker may have SIGTERM blocked.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}
