"""The machine under the engine: CPU threads, memory, and the start-up probe of the native
build. Imported while ``refract._core`` loads (see ``refract/_cpu.py``), so nothing here may
import the engine."""
