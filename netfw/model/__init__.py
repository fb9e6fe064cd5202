"""The validated model every input becomes: a NIC's spec (spec.py), security-group rules (rules.py), names of the
objects netfw makes (names.py), canonical values (values.py), and a spec as JSON and back (serial.py). Pure: nothing
here runs a command or reads a file. A value that exists here is safe to write into a restore file or batch script.

May import: netfw.errors.
"""
