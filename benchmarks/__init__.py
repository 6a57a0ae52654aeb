"""clova_edge.benchmarks"""
