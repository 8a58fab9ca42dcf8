"""Running the whole pipeline on one machine: embedded servers and a process supervisor."""
