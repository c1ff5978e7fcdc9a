"""Students: hyperspectral masked autoencoders built from any sensor's band table."""

from hyperkd.models.mae import SIZES, HyperspectralMAE, build_student, load_student

__all__ = ["SIZES", "HyperspectralMAE", "build_student", "load_student"]
