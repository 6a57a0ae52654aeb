"""clova-edge"""
