#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Diffuse8

/// Ctrl-C (SIGINT) and SIGTERM: remove the temporary files and `*.partial-*` folders being written
/// (`TemporaryPaths`), then end the process by the same signal, so callers see the usual status.
///
/// The signals are blocked in every thread (installed before any other thread starts, so all threads
/// inherit the mask) and taken by one thread with `sigwait`: the clean-up then runs as ordinary code,
/// not inside a signal handler.
enum InterruptHandler {
    static func install() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let blocked = set
        let thread = Thread {
            var signal: Int32 = 0
            var waitSet = blocked
            guard sigwait(&waitSet, &signal) == 0 else { return }
            let removed = TemporaryPaths.removeAll()
            let name = signal == SIGINT ? "interrupted" : "terminated"
            FileHandleStderr.write("\n\(name); removed \(removed.count) unfinished output(s)\n")
            Glibc.signal(signal, SIG_DFL)
            var only = sigset_t()
            sigemptyset(&only)
            sigaddset(&only, signal)
            pthread_sigmask(SIG_UNBLOCK, &only, nil)
            raise(signal)
        }
        thread.start()
    }
}
