// kn-local: Knative Services on one machine (see `kn-local --help`). Thin: everything lives in LocalMode.
import Glibc
import LocalMode

exit(KnLocal.main(Array(CommandLine.arguments.dropFirst())))
