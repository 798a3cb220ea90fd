#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Diffuse8

/// The write end of the pipe the signal handler reports to (-1 before `install`).
nonisolated(unsafe) private var signalPipeWriter: Int32 = -1

/// Ctrl-C (SIGINT) and SIGTERM: remove the temporary files and `*.partial-*` folders being written
/// (`TemporaryPaths`), then end the process by the same signal, so callers see the usual status.
///
/// The signal handler only writes the signal number to a pipe (async-signal-safe, whichever thread the signal
/// lands on); a dedicated thread reads it and does the clean-up as ordinary code, then restores the default
/// action and raises the signal again.
enum InterruptHandler {
    static func install() {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return }
        signalPipeWriter = fds[1]
        let reader = fds[0]
        let thread = Thread {
            var number: UInt8 = 0
            while read(reader, &number, 1) != 1 { if errno != EINTR { return } }
            let signal = Int32(number)
            let removed = TemporaryPaths.removeAll()
            let name = signal == SIGINT ? "interrupted" : "terminated"
            FileHandleStderr.write("\n\(name); removed \(removed.count) unfinished output(s)\n")
            Glibc.signal(signal, SIG_DFL)
            raise(signal)
        }
        thread.start()
        for signal in [SIGINT, SIGTERM] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                var byte = UInt8(truncatingIfNeeded: number)
                _ = write(signalPipeWriter, &byte, 1)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
    }
}
