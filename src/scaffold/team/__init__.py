"""`scaffold team`: start, watch and stop a coordinator and its workers, here or on other hosts."""
