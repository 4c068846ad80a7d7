// The entry point of the fuzz binary (see entry.c).
#pragma once
int FleetwardFuzz_main(int argc, char **argv);
