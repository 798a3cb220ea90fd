public enum PNGEncoder {}
