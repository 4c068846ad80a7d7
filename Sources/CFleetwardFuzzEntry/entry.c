// SwiftPM links an executable with `--defsym main=<Module>_main`, and `-parse-as-library` (which
// libFuzzer needs, so that its `main` is the one that runs) means Swift never emits that symbol.
// This is that symbol: it hands control to libFuzzer's driver with the Swift target
// `LLVMFuzzerTestOneInput` (FleetwardFuzz/main.swift). Built only by scripts/fuzz.sh.
#include <stddef.h>
#include <stdint.h>
#include "CFleetwardFuzzEntry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

int FleetwardFuzz_main(int argc, char **argv) {
    return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
}
