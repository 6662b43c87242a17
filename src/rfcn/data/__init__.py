"""rfcn.data"""
